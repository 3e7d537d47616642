"""HessianVectorProducts: 1,000 directions on one stream, each against the analytic Hessian times it."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.wire import arr, fn, unarr

# f(x, y) = sum(x^4)/4 + sum(x[:-1] x[1:]) + y^2 sum(x):  H is known in closed form.
DSL = "sum(x**4)/4 + sum(x[:-1]*x[1:]) + y**2 * sum(x)"


def hessian(x, y):
    n = len(x)
    H = np.zeros((n + 1, n + 1))
    H[:n, :n] = np.diag(3 * x**2) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    H[:n, n] = H[n, :n] = 2 * y
    H[n, n] = 2 * np.sum(x)
    return H


def gradient(x, y):
    g = x**3 + y**2
    g[:-1] += x[1:]
    g[1:] += x[:-1]
    return g, 2 * y * np.sum(x)


def start(x, y):
    return pb.HvpStreamRequest(start=pb.HvpStreamStart(function=fn(DSL), at={"x": arr(x), "y": arr(y)}))


def test_thousand_directions_on_one_stream(stub):
    rng = np.random.default_rng(7)
    n = 20
    x, y = rng.normal(size=n), 0.8
    directions = rng.normal(size=(1000, n + 1))

    def messages():
        yield start(x, y)
        for d in directions:
            yield pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr(d[:n]), "y": arr(d[n])}))

    answers = list(stub.HessianVectorProducts(messages(), timeout=120))
    assert len(answers) == 1 + len(directions)
    first = answers[0].started
    g_x, g_y = gradient(x, y)
    np.testing.assert_allclose(unarr(first.gradient["x"]), g_x, rtol=1e-13)
    np.testing.assert_allclose(unarr(first.gradient["y"]), g_y, rtol=1e-13)
    assert np.isclose(first.value, np.sum(x**4) / 4 + np.sum(x[:-1] * x[1:]) + y**2 * np.sum(x), rtol=1e-14)

    H = hessian(x, y)
    for i, (answer, d) in enumerate(zip(answers[1:], directions)):
        assert answer.WhichOneof("message") == "hvp" and answer.hvp.index == i
        want = H @ d
        np.testing.assert_allclose(unarr(answer.hvp.hvp["x"]), want[:n], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(unarr(answer.hvp.hvp["y"]), want[n], rtol=1e-12, atol=1e-12)


def test_answers_interleave_with_requests(stub):
    """The server answers each direction as it arrives, on the open stream (not after the client closes)."""
    import queue

    outbox: queue.Queue = queue.Queue()
    x, y = np.array([1.0, -2.0, 0.5]), 1.5
    outbox.put(start(x, y))

    def messages():
        while (m := outbox.get()) is not None:
            yield m

    responses = stub.HessianVectorProducts(messages(), timeout=30)
    assert next(responses).WhichOneof("message") == "started"
    H = hessian(x, y)
    for i in range(3):
        d = np.eye(4)[i + 1]
        outbox.put(pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr(d[:3]), "y": arr(d[3])})))
        answer = next(responses).hvp  # would block forever if answers waited for the end of the stream
        np.testing.assert_allclose(unarr(answer.hvp["x"]), H[:3, i + 1], rtol=1e-14)
    outbox.put(None)
    assert list(responses) == []


def _error(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value, dict(e.value.trailing_metadata())


def test_stream_must_start_with_start(stub):
    msgs = [pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr([1.0])}))]
    err, md = _error(lambda: list(stub.HessianVectorProducts(iter(msgs), timeout=10)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert md["derivd-code"] == "invalid_request" and "start" in err.details()


def test_bad_direction_names_its_index(stub):
    x, y = np.array([1.0, 2.0]), 0.5
    good = pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr([1.0, 0.0]), "y": arr(0.0)}))
    bad = pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr([1.0, 0.0, 3.0]), "y": arr(0.0)}))
    responses = []

    def consume():
        for r in stub.HessianVectorProducts(iter([start(x, y), good, good, bad, good]), timeout=10):
            responses.append(r)

    err, md = _error(consume)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert md["derivd-code"] == "shape_mismatch"
    assert "direction[2]" in err.details()
    assert len(responses) == 3  # started + the two good directions, answered before the failure


def test_non_scalar_function_is_refused_at_start(stub):
    msgs = [pb.HvpStreamRequest(start=pb.HvpStreamStart(function=fn("x * 2"), at={"x": arr([1.0, 2.0])}))]
    err, md = _error(lambda: list(stub.HessianVectorProducts(iter(msgs), timeout=10)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert md["derivd-code"] == "not_scalar"
