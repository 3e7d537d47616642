"""The SDK's sessions: ``GrpcClient.session`` (one gRPC stream, or the server's session socket) and
``UnarySession`` (REST, one request per call) answer alike and as the analytic references do; a refused
call raises the typed error and the session goes on; ``open_session`` picks the stream where the client
has one, and ``session_transport="auto"`` the socket where the server offers it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.references import rosenbrock, rosenbrock_gradient, rosenbrock_hessian

pytest.importorskip("grpc")
pytest.importorskip("derivd.grpc_api.server")
from derivd_client import errors  # noqa: E402
from derivd_client.grpc_client import GrpcClient  # noqa: E402
from derivd_client.session import Session, UnarySession, open_session  # noqa: E402
from derivd_client.session_socket import SocketSession  # noqa: E402

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
SESSION_OF = {"grpc": Session, "socket": SocketSession, "auto": SocketSession}  # the server offers the socket


@pytest.fixture(params=["grpc", "socket", "auto"])
def streams(request, grpc_target):
    """A gRPC client whose sessions take ``request.param``'s transport."""
    with GrpcClient(grpc_target, timeout=60, retries=1, session_transport=request.param) as c:
        yield c


def test_stream_and_unary_sessions_answer_as_the_references(streams, sdk):
    rng = np.random.default_rng(11)
    x0 = rng.normal(size=5)
    with open_session(streams, ROSEN, {"x": x0}) as s, open_session(sdk, ROSEN, {"x": x0}) as u:
        assert type(s) is SESSION_OF[streams.session_transport] and isinstance(u, UnarySession)
        for _ in range(3):
            x, v = rng.normal(size=5), rng.normal(size=5)
            for session in (s, u):
                value, grad = session.value_and_grad(x)
                assert np.isclose(value, rosenbrock(x), rtol=1e-14)
                np.testing.assert_allclose(grad, rosenbrock_gradient(x), rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(session.hvp(x, v), rosenbrock_hessian(x) @ v, rtol=1e-12, atol=1e-11)
                np.testing.assert_allclose(session.hessian(x), rosenbrock_hessian(x), rtol=1e-12, atol=1e-11)
                assert np.isclose(session.value({"x": x}), rosenbrock(x), rtol=1e-14)
        assert s.requests == u.requests == 1 + 12  # the opening, then one request per call
        x, v = rng.normal(size=5), rng.normal(size=5)
        for session in (s, u):  # along v: c1 = g.v, c2 = v.H.v / 2
            np.testing.assert_allclose(session.taylor(x, v, 2).reshape(-1), [
                rosenbrock(x), rosenbrock_gradient(x) @ v, v @ rosenbrock_hessian(x) @ v / 2], rtol=1e-11)
            value, jac = session.value_and_jacobian(x)
            np.testing.assert_allclose(jac, rosenbrock_gradient(x)[None, :], rtol=1e-12, atol=1e-12)
            assert value.shape == (1,) and np.isclose(value[0], rosenbrock(x), rtol=1e-14)
        assert s.server_seconds > 0


def test_several_inputs_flat_in_wrt_order(streams):
    with streams.session("stack([x[0]*y, sin(x[1]) + y**2])", {"x": [0.5, 1.0], "y": 2.0}, wrt=["x", "y"]) as s:
        assert s.n == 3 and s.out_shape == (2,)
        x0, x1, y = 0.3, -1.2, 1.7
        np.testing.assert_allclose(s.jacobian([x0, x1, y]), [[y, 0, x0], [0, np.cos(x1), 2 * y]], rtol=1e-15)
        np.testing.assert_allclose(s.value(s.flatten({"x": [x0, x1], "y": y})), [x0 * y, np.sin(x1) + y**2])
        assert s.split(np.arange(3.0))["x"].tolist() == [0.0, 1.0] and s.split(np.arange(3.0))["y"].shape == ()


def test_a_refused_call_raises_and_the_session_goes_on(streams):
    with streams.session(ROSEN, {"x": np.zeros(4)}) as s:
        with pytest.raises(errors.ClientError) as e:
            s.gradient(np.zeros(3))
        assert e.value.code == "invalid_request" and e.value.status == 422
        x = np.array([0.1, 0.2, 0.3, 0.4])
        np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
    with pytest.raises(errors.ParseError):  # the open refused: raised, on either transport
        streams.session("sum(x", {"x": np.zeros(2)})


def test_open_session_refuses_an_asynchronous_client(rpc, server):
    from derivd_client.grpc_client import AsyncGrpcClient

    async def refused():  # an asyncio channel is made inside a running loop, as users make it
        with pytest.raises(TypeError, match="blocking"):
            open_session(AsyncGrpcClient(rpc.target), ROSEN, {"x": np.zeros(3)})

    asyncio.run(refused())
    with pytest.raises(TypeError, match="blocking"):
        open_session(dd.AsyncClient(server.url), ROSEN, {"x": np.zeros(3)})


def test_an_opening_answers_the_first_call_at_its_point(streams):
    """``opening="gradient"`` (or ``"hessian"``, ``"jacobian"``, ``"value"``): the opening computes that at
    ``at``, and the first such call there is answered without a round trip; any later one is asked."""
    rng = np.random.default_rng(4)
    x0, x = rng.normal(size=5), rng.normal(size=5)
    with streams.session(ROSEN, {"x": x0}, opening="gradient") as s:
        value, grad = s.value_and_grad(x0)
        assert s.requests == 1, "answered by the opening"
        assert np.isclose(value, rosenbrock(x0), rtol=1e-14)
        np.testing.assert_allclose(grad, rosenbrock_gradient(x0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.value_and_grad(x0)[1], rosenbrock_gradient(x0), rtol=1e-12, atol=1e-12)
        assert s.requests == 2
    with streams.session(ROSEN, x=x0, opening="hessian") as s:  # the point given as a keyword
        value, grad, hess = s.value_grad_and_hessian(x0)
        assert s.requests == 1
        np.testing.assert_allclose(hess, rosenbrock_hessian(x0), rtol=1e-12, atol=1e-11)
        np.testing.assert_allclose(grad, rosenbrock_gradient(x0), rtol=1e-12, atol=1e-12)
    with streams.session(ROSEN, {"x": x0}, opening="gradient") as s:  # a first call elsewhere is asked
        np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-12, atol=1e-12)
        assert s.requests == 2
    with streams.session("stack([x[0]*y, sin(x[1]) + y**2])", {"x": [0.5, 1.0], "y": 2.0}, wrt=["x", "y"],
                         opening="jacobian") as s:
        value, jac = s.value_and_jacobian([0.5, 1.0, 2.0])
        assert s.requests == 1
        np.testing.assert_allclose(jac, [[2.0, 0, 0.5], [0, np.cos(1.0), 4.0]], rtol=1e-15)
        np.testing.assert_allclose(value, [1.0, np.sin(1.0) + 4.0], rtol=1e-15)
    with streams.session(ROSEN, {"x": x0}, opening="value") as s:
        assert np.isclose(s.value(x0), rosenbrock(x0), rtol=1e-14) and s.requests == 1
    with pytest.raises(ValueError, match="opening must be one of"):
        streams.session(ROSEN, {"x": x0}, opening="hvp")
    with pytest.raises(errors.ClientError) as e:  # the opening's gradient needs a scalar output, as an ask's
        streams.session("stack([x[0], x[1]])", {"x": x0[:2]}, opening="gradient")
    assert e.value.status in (400, 422)
