#!/usr/bin/env bash
# Regenerate the committed gRPC code of derivd.v1 from proto/derivd/v1/derivd.proto,
# and of the internal worker API from proto/derivd/internal/worker.proto.
#
#   bash scripts/gen_proto.sh
#
# grpcio-tools is pinned so that the generated code (and the minimum grpcio and
# protobuf runtimes it checks for) only changes when this line does. When the
# pinned version is not the one installed, it is installed into a throwaway
# directory for this run only.
#
# protoc names Python modules after the proto's path (derivd/v1/...), which
# would collide with the `derivd` package itself, so the generated modules are
# placed in services/derivd/grpc_api/ and the one import between them is
# rewritten to point there. The descriptor keeps the name derivd/v1/derivd.proto,
# which is what server reflection shows.
set -euo pipefail
GRPCIO_TOOLS_VERSION=1.85.1

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/services/derivd/grpc_api"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

have="$(python -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$GRPCIO_TOOLS_VERSION" ]; then
    python -m pip install -q --target "$tmp/tools" "grpcio-tools==$GRPCIO_TOOLS_VERSION"
    export PYTHONPATH="$tmp/tools${PYTHONPATH:+:$PYTHONPATH}"
fi

mkdir -p "$tmp/gen"
python -m grpc_tools.protoc -I "$root/proto" \
    --python_out="$tmp/gen" --pyi_out="$tmp/gen" --grpc_python_out="$tmp/gen" \
    "$root/proto/derivd/v1/derivd.proto" "$root/proto/derivd/internal/worker.proto"

for f in derivd_pb2.py derivd_pb2.pyi derivd_pb2_grpc.py; do
    sed -e 's/^from derivd\.v1 import derivd_pb2 as/from derivd.grpc_api import derivd_pb2 as/' \
        "$tmp/gen/derivd/v1/$f" > "$out/$f"
done
echo "generated $(cd "$out" && ls derivd_pb2*) in services/derivd/grpc_api with grpcio-tools $GRPCIO_TOOLS_VERSION"

# The SDK's own copy (the client never imports the server package).
for f in derivd_pb2.py derivd_pb2.pyi derivd_pb2_grpc.py; do
    sed -e 's/^from derivd\.v1 import derivd_pb2 as/from derivd_client._grpc import derivd_pb2 as/' \
        "$tmp/gen/derivd/v1/$f" > "$root/clients/python/derivd_client/_grpc/$f"
done
echo "generated derivd_pb2* in clients/python/derivd_client/_grpc"

# The internal API between gateways and workers (not public), the same way, into derivd.dispatch.
for f in worker_pb2.py worker_pb2.pyi worker_pb2_grpc.py; do
    sed -e 's/^from derivd\.internal import worker_pb2 as/from derivd.dispatch import worker_pb2 as/' \
        "$tmp/gen/derivd/internal/$f" > "$root/services/derivd/dispatch/$f"
done
echo "generated worker_pb2* in services/derivd/dispatch"
