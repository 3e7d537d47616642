"""derivd: differentiation as a service.

Layers, each importing only those below it:
ops -> ir -> dsl / transforms / compile -> engines -> core -> dispatch -> skins.

``core`` computes one request in this process (endpoint table, checks, the
endpoints by AD, Taylor series and finite differences); ``dispatch`` decides
where and when it runs (inline or on a compute thread, in process or on a
worker); the skins are REST (``gateway``), public gRPC (``grpc_api``), the
worker process (``workers``) and the command line (``cli``).
"""

__version__ = "0.1.0"
