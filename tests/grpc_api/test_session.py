"""Session: one function opened once, then asks of every kind at new points, each against its analytic
answer; a refused ask leaves the session open; a session on a stored id; the first message must be `open`."""

from __future__ import annotations

import json
import queue

import grpc
import numpy as np
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.wire import arr, fn, unarr
from tests.references import rosenbrock, rosenbrock_gradient, rosenbrock_hessian

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
# f(x, y) = [x0 * y, sin(x1) + y^2]: a Jacobian over two inputs flattened in wrt order (x, then y).
VECTOR = "stack([x[0]*y, sin(x[1]) + y**2])"


class Conversation:
    """A Session call driven one message at a time (what a client does)."""

    def __init__(self, stub, open_message):
        self.outbox = queue.Queue()
        self.outbox.put(pb.SessionRequest(open=open_message))
        self.responses = stub.Session(iter(self.outbox.get, None), timeout=60)
        self.ids = 0

    def first(self):
        return next(self.responses)

    def ask(self, kind, x, v=None, order=0):
        self.ids += 1
        ask = pb.SessionAsk(id=self.ids, kind=kind, x=arr(x), order=order)
        if v is not None:
            ask.v.CopyFrom(arr(v))
        self.outbox.put(pb.SessionRequest(ask=ask))
        answer = next(self.responses).answer
        assert answer.id == self.ids
        return answer

    def close(self):
        self.outbox.put(None)
        return list(self.responses)


def test_every_kind_of_ask_at_new_points(stub):
    rng = np.random.default_rng(3)
    n = 6
    x0 = rng.normal(size=n)
    talk = Conversation(stub, pb.SessionOpen(function=fn(ROSEN), at={"x": arr(x0)}))
    opened = talk.first().opened
    assert list(opened.wrt) == ["x"] and list(opened.n) == [n] and list(opened.out_shape) == []
    assert np.isclose(unarr(opened.value), rosenbrock(x0), rtol=1e-14)
    for _ in range(5):
        x, v = rng.normal(size=n), rng.normal(size=n)
        value = talk.ask(pb.SESSION_VALUE, x)
        assert np.isclose(unarr(value.value)[0], rosenbrock(x), rtol=1e-14)
        g = talk.ask(pb.SESSION_GRADIENT, x)
        assert np.isclose(unarr(g.value)[0], rosenbrock(x), rtol=1e-14)
        np.testing.assert_allclose(unarr(g.gradient), rosenbrock_gradient(x), rtol=1e-12, atol=1e-12)
        hv = talk.ask(pb.SESSION_HVP, x, v)
        np.testing.assert_allclose(unarr(hv.hvp), rosenbrock_hessian(x) @ v, rtol=1e-12, atol=1e-11)
        h = talk.ask(pb.SESSION_HESSIAN, x)
        np.testing.assert_allclose(unarr(h.hessian), rosenbrock_hessian(x), rtol=1e-12, atol=1e-11)
        np.testing.assert_allclose(unarr(h.gradient), rosenbrock_gradient(x), rtol=1e-12, atol=1e-12)
        # Taylor along v: c1 = g.v and c2 = v.H.v / 2
        t = unarr(talk.ask(pb.SESSION_TAYLOR, x, v, order=2).coefficients).reshape(3)
        np.testing.assert_allclose(t, [rosenbrock(x), rosenbrock_gradient(x) @ v,
                                       v @ rosenbrock_hessian(x) @ v / 2], rtol=1e-11)
    assert talk.close() == []


def test_jacobian_over_two_inputs_in_wrt_order(stub):
    talk = Conversation(stub, pb.SessionOpen(function=fn(VECTOR), at={"x": arr([0.5, 1.0]), "y": arr(2.0)},
                                             wrt=["x", "y"]))
    opened = talk.first().opened
    assert list(opened.n) == [2, 1] and list(opened.out_shape) == [2]
    x0, x1, y = 0.3, -1.2, 1.7
    answer = talk.ask(pb.SESSION_JACOBIAN, [x0, x1, y])
    np.testing.assert_allclose(unarr(answer.value), [x0 * y, np.sin(x1) + y**2], rtol=1e-15)
    np.testing.assert_allclose(unarr(answer.jacobian).reshape(2, 3),
                               [[y, 0, x0], [0, np.cos(x1), 2 * y]], rtol=1e-15)
    talk.close()


def test_a_refused_ask_answers_its_error_and_the_session_goes_on(stub):
    talk = Conversation(stub, pb.SessionOpen(function=fn(ROSEN), at={"x": arr(np.zeros(4))}))
    talk.first()
    bad = talk.ask(pb.SESSION_GRADIENT, np.zeros(3))
    assert bad.HasField("error") and bad.status == 422 and bad.error.code == "invalid_request"
    assert "4 wrt values" in bad.error.message and json.loads(bad.error.detail_json)["field"] == "ask.x"
    no_v = talk.ask(pb.SESSION_HVP, np.zeros(4))
    assert no_v.HasField("error") and "ask.v" in no_v.error.message
    x = np.array([0.1, 0.2, 0.3, 0.4])
    good = talk.ask(pb.SESSION_GRADIENT, x)
    np.testing.assert_allclose(unarr(good.gradient), rosenbrock_gradient(x), rtol=1e-13)
    talk.close()


def test_a_session_on_a_stored_function_with_stored_constants(stub, rest):
    stored = rest.post("/v1/functions", json={"dsl": "sum(w * x**2)", "constants": {"w": [1.0, 2.0, 3.0]}}).json()
    talk = Conversation(stub, pb.SessionOpen(function=pb.Function(id=stored["id"]), at={"x": arr(np.ones(3))}))
    talk.first()
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(unarr(talk.ask(pb.SESSION_GRADIENT, x).gradient), 2 * np.array([1.0, 2, 3]) * x)
    talk.close()


def test_the_first_message_must_open_and_a_bad_program_fails_the_open(stub):
    outbox = iter([pb.SessionRequest(ask=pb.SessionAsk(x=arr([1.0])))])
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Session(outbox, timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "`open`" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Session(iter([pb.SessionRequest(open=pb.SessionOpen(function=fn("sum(x"),
                                                                      at={"x": arr([1.0])}))]), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(e.value.trailing_metadata())["derivd-code"] == "parse_error"
