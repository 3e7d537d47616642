"""Worker processes: the internal gRPC worker that computes requests (``server``, above the core)
and the local supervisor that starts and restarts them (``supervisor``). The gateway's side of the
internal API (pool clients, messages, ``worker_pb2*``) is ``derivd.dispatch``."""
