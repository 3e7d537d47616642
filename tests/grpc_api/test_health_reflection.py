"""Standard gRPC health checking and server reflection answer on the public port."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def test_health_serving(stack):
    health = health_pb2_grpc.HealthStub(stack.channel)
    for service in ("", "derivd.v1.Differentiator"):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(stack):
    db = ProtoReflectionDescriptorDatabase(stack.channel)
    services = set(db.get_services())
    assert {"derivd.v1.Differentiator", "grpc.health.v1.Health"} <= services
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName("derivd.v1.Differentiator")
    assert svc.file.name == "derivd/v1/derivd.proto"
    methods = {m.name: m for m in svc.methods}
    assert set(methods) == {"Evaluate", "Gradient", "Jacobian", "Jvp", "Vjp", "Hvp", "Hessian", "Taylor",
                            "Derivatives", "HessianVectorProducts", "Session", "Transports"}
    for name in ("HessianVectorProducts", "Session"):
        assert methods[name].client_streaming and methods[name].server_streaming
    array = pool.FindMessageTypeByName("derivd.v1.Array")
    assert [f.name for f in array.fields] == ["shape", "data", "dtype"]
