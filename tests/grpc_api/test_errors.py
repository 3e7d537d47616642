"""Failures over gRPC: the status code for the HTTP status, and the same code and message as REST."""

from __future__ import annotations

import contextlib
import json

import grpc
import numpy as np
import pytest

from derivd.config import Settings
from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.conftest import Stack
from tests.grpc_api.wire import arr, fn
from tests.support import BlackBoxServer

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


@contextlib.contextmanager
def hanging_black_box(**settings):
    """A stack that may call loopback, with black box "hang" registered: it takes every call and
    never answers, so a request on it ends by a deadline and by nothing else, however fast the host."""
    with BlackBoxServer() as box, Stack(Settings(host="127.0.0.1", blackbox_allow=["127.0.0.1/32"],
                                                 blackbox_deny=[], **settings)) as stack:
        stack.service.register_blackbox({"name": "hang", "url": box.url("/hang"), "input_size": 2,
                                         "output_size": 1, "timeout_s": 120})
        yield stack


HANG = pb.JacobianRequest(function=pb.Function(blackbox="hang"), at={"x": arr(X)})


def test_client_deadline_cancels_a_long_request():
    with hanging_black_box() as s:
        with pytest.raises(grpc.RpcError) as e:
            s.stub.Jacobian(HANG, timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_server_deadline_is_deadline_exceeded_with_code():
    """Without a client deadline, the server's request_timeout_s applies, with the contract's code."""
    with hanging_black_box(request_timeout_s=0.2) as s:
        with pytest.raises(grpc.RpcError) as e:
            s.stub.Jacobian(HANG)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert dict(e.value.trailing_metadata())["derivd-code"] == "deadline_exceeded"


def test_unknown_mode_number(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Gradient(pb.GradientRequest(function=fn("sum(x)"), at={"x": arr(X)}, mode=17))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mode" in e.value.details()
