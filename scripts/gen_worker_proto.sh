#!/usr/bin/env bash
# Regenerate the committed gRPC code of the internal worker API from
# proto/derivd/internal/worker.proto into services/derivd/workers/.
#
#   bash scripts/gen_worker_proto.sh
#
# Same pinned grpcio-tools as scripts/gen_proto.sh (the public API), installed
# into a throwaway directory when another version is the one installed. protoc
# names modules after the proto's path (derivd/internal/...), which would
# collide with the `derivd` package, so the one import between the generated
# modules is rewritten to derivd.workers.
set -euo pipefail
GRPCIO_TOOLS_VERSION=1.85.1

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/services/derivd/workers"
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
    "$root/proto/derivd/internal/worker.proto"

for f in worker_pb2.py worker_pb2.pyi worker_pb2_grpc.py; do
    sed -e 's/^from derivd\.internal import worker_pb2 as/from derivd.workers import worker_pb2 as/' \
        "$tmp/gen/derivd/internal/$f" > "$out/$f"
done
echo "generated $(cd "$out" && ls worker_pb2*) in services/derivd/workers with grpcio-tools $GRPCIO_TOOLS_VERSION"
