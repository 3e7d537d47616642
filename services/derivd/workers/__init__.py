"""Worker pools: the internal gRPC worker (``server``), the pool clients and router (``pool``),
and the local supervisor (``supervisor``). Generated code: ``worker_pb2*`` (scripts/gen_proto.sh)."""
