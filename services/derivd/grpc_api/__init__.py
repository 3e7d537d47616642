"""The public gRPC skin, package ``derivd.v1`` (CONTRACT §5).

``derivd_pb2*.py`` are generated from ``proto/derivd/v1/derivd.proto`` by
``scripts/gen_proto.sh`` and committed; ``convert`` maps messages to and from
the core, ``servicer`` is the thin skin, ``session`` the ``Session`` RPC's asks
(each a dispatcher request), ``server`` wires health, reflection, message sizes
and API keys.
"""
