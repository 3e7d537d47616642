"""Failures over gRPC: the status code for the HTTP status, and the same code and message as REST."""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest

from derivd.config import Settings
from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.conftest import Stack
from tests.grpc_api.wire import arr, fn

# The mapping CONTRACT §5 asks for, written out independently of the server's table.
EXPECTED = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
            404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
            422: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
            501: grpc.StatusCode.UNIMPLEMENTED, 502: grpc.StatusCode.UNAVAILABLE,
            504: grpc.StatusCode.DEADLINE_EXCEEDED}

X = [1.0, 2.0]
CASES = {  # name: (method, proto request, the same request as REST JSON)
    "parse_error": ("Gradient", pb.GradientRequest(function=fn("sum(x**"), at={"x": arr(X)}),
                    {"function": {"dsl": "sum(x**"}, "at": {"x": X}}),
    "unbound_input": ("Evaluate", pb.EvaluateRequest(function=fn("x + z"), at={"x": arr(X)}),
                      {"function": {"dsl": "x + z"}, "at": {"x": X}}),
    "jvp_shape": ("Jvp", pb.JvpRequest(function=fn("x * 2"), at={"x": arr(X)}, v={"x": arr([1.0, 2.0, 3.0])}),
                  {"function": {"dsl": "x * 2"}, "at": {"x": X}, "v": {"x": [1.0, 2.0, 3.0]}}),
    "unknown_id": ("Gradient", pb.GradientRequest(function=pb.Function(id="0" * 32), at={"x": arr(X)}),
                   {"function": {"id": "0" * 32}, "at": {"x": X}}),
    "program_too_long": ("Evaluate", pb.EvaluateRequest(function=fn("x" + " + x" * 100_000), at={"x": arr(X)}),
                         {"function": {"dsl": "x" + " + x" * 100_000}, "at": {"x": X}}),
    "wrt_constant": ("Gradient", pb.GradientRequest(function=fn("sum(x*c)"), at={"x": arr(X)},
                                                    constants={"c": arr([1, 2], "int64")}, wrt=["c"]),
                     {"function": {"dsl": "sum(x*c)"}, "at": {"x": X}, "constants": {"c": [1, 2]}, "wrt": ["c"]}),
    "gradient_not_scalar": ("Gradient", pb.GradientRequest(function=fn("x * 2"), at={"x": arr(X)}),
                            {"function": {"dsl": "x * 2"}, "at": {"x": X}}),
    "index_out_of_range": ("Evaluate", pb.EvaluateRequest(function=fn("x[5]"), at={"x": arr(X)}),
                           {"function": {"dsl": "x[5]"}, "at": {"x": X}}),
    "unknown_blackbox": ("Gradient", pb.GradientRequest(function=pb.Function(blackbox="nope"), at={"x": arr(X)}),
                         {"function": {"blackbox": "nope"}, "at": {"x": X}}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_matches_rest(stub, rest, case):
    method, request, body = CASES[case]
    r = rest.post(f"/v1/{method.lower()}", json=body)
    assert r.status_code >= 400, r.text
    want = r.json()["error"]
    with pytest.raises(grpc.RpcError) as e:
        getattr(stub, method)(request, timeout=30)
    err = e.value
    md = dict(err.trailing_metadata())
    assert err.code() == EXPECTED[r.status_code]
    assert md["derivd-code"] == want["code"]
    assert err.details() == want["message"]
    body = pb.Error.FromString(md["derivd-error-bin"])
    assert (body.code, body.message) == (want["code"], want["message"])
    assert json.loads(body.detail_json) == want["detail"]


def test_parse_error_detail_has_position(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Gradient(pb.GradientRequest(function=fn("sum(x**"), at={"x": arr(X)}))
    detail = json.loads(pb.Error.FromString(dict(e.value.trailing_metadata())["derivd-error-bin"]).detail_json)
    assert detail["line"] == 1 and detail["column"] >= 1


@pytest.mark.parametrize("bad, where", [
    (pb.Array(shape=[3], data=np.zeros(2).tobytes()), "at.x"),
    (pb.Array(shape=[2], data=np.zeros(2).tobytes(), dtype="complex128"), "at.x"),
    (pb.Array(shape=[-1], data=b""), "at.x"),
])
def test_malformed_arrays_name_the_field(stub, bad, where):
    with pytest.raises(grpc.RpcError) as e:
        stub.Evaluate(pb.EvaluateRequest(function=fn("x"), at={"x": bad}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(where)
    assert dict(e.value.trailing_metadata())["derivd-code"] == "invalid_request"


def test_missing_function(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Evaluate(pb.EvaluateRequest(at={"x": arr(X)}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "function" in e.value.details()


def test_bad_fd_options(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Gradient(pb.GradientRequest(function=fn("sum(x)"), at={"x": arr(X)}, mode=pb.MODE_FINITE,
                                         fd=pb.FiniteDifferences(method="sideways")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fd.method" in e.value.details()


# ~1.5 s of numpy work: long enough for a 0.3 s deadline to pass mid-request.
N = 1200
LONG = "A @ tanh(A @ tanh(A @ x))"


def long_request():
    rng = np.random.default_rng(0)
    return pb.JacobianRequest(function=fn(LONG), at={"x": arr(rng.random(N))}, mode=pb.MODE_FORWARD,
                              constants={"A": arr(rng.random((N, N)) / N)})


def test_client_deadline_cancels_a_long_request(stub):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Jacobian(long_request(), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.0


def test_server_deadline_is_deadline_exceeded_with_code():
    """Without a client deadline, the server's request_timeout_s applies, with the contract's code."""
    with Stack(Settings(host="127.0.0.1", request_timeout_s=0.2)) as s:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            s.stub.Jacobian(long_request())
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert dict(e.value.trailing_metadata())["derivd-code"] == "deadline_exceeded"
        assert time.monotonic() - t0 < 1.0


def test_unknown_mode_number(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Gradient(pb.GradientRequest(function=fn("sum(x)"), at={"x": arr(X)}, mode=17))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mode" in e.value.details()
