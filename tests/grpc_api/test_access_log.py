"""gRPC's access records name a refusal's error code, as REST's do."""

from __future__ import annotations

import logging

import grpc
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.wire import arr, fn
from tests.support import wait_for


def test_a_refused_call_logs_its_code(stub, caplog):
    with caplog.at_level(logging.INFO, logger="derivd.access"):
        with pytest.raises(grpc.RpcError):
            stub.Gradient(pb.GradientRequest(function=fn("sum(x**"), at={"x": arr([1.0, 2.0])}))
        stub.Gradient(pb.GradientRequest(function=fn("sum(x**2)"), at={"x": arr([1.0, 2.0])}))
        def grpc_records():
            found = [r.fields for r in caplog.records if r.name == "derivd.access" and r.fields["transport"] == "grpc"]
            return found if len(found) >= 2 else None

        refused, answered = wait_for(grpc_records, "two gRPC access records")[-2:]
    assert (refused["route"], refused["status"], refused["error"]) == ("gradient", 400, "parse_error")
    assert answered["status"] == 200 and answered["error"] is None
