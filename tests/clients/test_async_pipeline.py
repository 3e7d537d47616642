"""AsyncGrpcClient's unary calls on pipelined session sockets (derivd_client.pipeline): many mixed calls in flight
at once answer as the gRPC unary calls do (field by field: keys, types, dtypes, shapes, values) and as the
analytic references do; refusals are the unary call's exceptions, per ask, the session going on; a function
the server lost is stored again; a stopped server fails the asks in flight and the next call recovers; the
client's timeout and a cancelled call leave the answers in order; the API key is the socket's; without the
socket (off on the server, ``session_transport="grpc"``, not reachable) every call goes over gRPC."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.conftest import HOLD
from tests.references import rosenbrock, rosenbrock_gradient, rosenbrock_hessian
from tests.support import free_port, grpc_servers

pytest.importorskip("grpc")
pytest.importorskip("derivd.grpc_api.server")
from derivd_client.grpc_client import AsyncGrpcClient  # noqa: E402

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
LSQ = "sum((A @ x - b)**2)"  # gradient 2 A^T (A x - b), Hessian 2 A^T A
PAIR = "stack([x[0]*y, sin(x[1]) + y**2])"  # R^3 -> R^2


@pytest.fixture()
def serve(server):
    """``serve(**settings)``: a GrpcServer with its session socket on the suite's dispatcher."""
    with grpc_servers(server.app.dispatcher) as start:
        yield start


def calls(rng):
    """(method, function, keywords, the reference's answer) of mixed programs, shapes and kinds."""
    A, b = rng.normal(size=(6, 4)), rng.normal(size=6)
    out = []
    for n in (5, 8):
        for _ in range(6):
            x, v = rng.normal(size=n), rng.normal(size=n)
            out += [("gradient", ROSEN, {"x": x}, {"value": rosenbrock(x), "gradient": {"x": rosenbrock_gradient(x)}}),
                    ("evaluate", ROSEN, {"x": x}, {"value": rosenbrock(x)}),
                    ("hvp", ROSEN, {"x": x, "v": v}, {"hvp": {"x": rosenbrock_hessian(x) @ v}}),
                    ("hessian", ROSEN, {"x": x}, {"hessian": rosenbrock_hessian(x)}),
                    ("jacobian", ROSEN, {"x": x}, {"jacobian": rosenbrock_gradient(x)[None, :]}),
                    ("taylor", ROSEN, {"x": x, "v": v, "order": 2}, {"coefficients": np.array(
                        [[rosenbrock(x)], [rosenbrock_gradient(x) @ v], [v @ rosenbrock_hessian(x) @ v / 2]])})]
    for _ in range(6):
        x = rng.normal(size=4)
        out.append(("gradient", LSQ, {"x": x, "constants": {"A": A, "b": b}},
                    {"gradient": {"x": 2 * A.T @ (A @ x - b)}}))
        out.append(("hessian", LSQ, {"x": x, "constants": {"A": A, "b": b}}, {"hessian": 2 * A.T @ A}))
        x0, x1, y = rng.normal(size=3)
        jac = np.array([[y, 0, x0], [0, np.cos(x1), 2 * y]])
        out.append(("jacobian", PAIR, {"x": np.array([x0, x1]), "y": y, "wrt": ["x", "y"]}, {"jacobian": jac}))
        out.append(("evaluate", PAIR, {"x": np.array([x0, x1]), "y": y}, {"value": [x0 * y, np.sin(x1) + y * y]}))
        # y not differentiated: its value is part of what the session fixed, so each y opens its own
        out.append(("gradient", "sum(x**2) * y", {"x": np.array([x0, x1]), "y": 2.0, "wrt": ["x"]},
                    {"gradient": {"x": 4 * np.array([x0, x1])}}))
    return out


async def call(client, method, function, kw):
    try:
        return await getattr(client, method)(function, **kw)
    except dd.DerivdError as e:
        return e


def same_answer(a, b):
    """The pipelined answer ``a`` is the unary one ``b``: keys, types, dtypes, shapes, values (to the last bits
    the two compile tiers may differ by), the engine; or the same exception, field by field."""
    if isinstance(b, Exception):
        assert type(a) is type(b) and (a.status, a.code, a.message, a.detail) == (b.status, b.code, b.message,
                                                                                  b.detail)
        return
    assert sorted(a) == sorted(b) and set(a.timing) == set(b.timing)
    for key in b:
        x, y = a[key], b[key]
        assert type(x) is type(y), key
        if isinstance(y, dict):
            assert sorted(x) == sorted(y)
            pairs = [(x[k], y[k]) for k in y]
        else:
            pairs = [(x, y)]
        for p, q in pairs:
            if isinstance(q, (str, tuple, int)):
                assert p == q or key == "tier", key
            else:
                assert np.asarray(p).dtype == np.asarray(q).dtype and np.shape(p) == np.shape(q), key
                np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-13)


def test_mixed_calls_in_flight_answer_as_grpc_unary_and_the_references(grpc_target):
    todo = calls(np.random.default_rng(5))

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=60) as piped, \
                AsyncGrpcClient(grpc_target, timeout=60, session_transport="grpc") as unary:
            answers = await asyncio.gather(*[call(piped, m, f, kw) for m, f, kw, _ in todo])
            assert len(piped.pipelines) >= 4 and len(unary.pipelines) == 0
            return answers, [await call(unary, m, f, kw) for m, f, kw, _ in todo]

    answers, unary = asyncio.run(main())
    for (method, _, _, reference), a, b in zip(todo, answers, unary):
        same_answer(a, b)
        for key, expected in reference.items():
            got = a[key]
            if isinstance(expected, dict):
                assert got.keys() == expected.keys()
                for name in expected:
                    np.testing.assert_allclose(got[name], expected[name], rtol=1e-11, atol=1e-11)
            else:
                np.testing.assert_allclose(np.reshape(got, np.shape(expected)), expected, rtol=1e-11, atol=1e-11)
                assert np.shape(got) == np.shape(b[key])


def test_refusals_are_the_unary_calls_errors_per_ask_and_the_session_goes_on(grpc_target):
    good, singular = np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([[1.0, 2.0], [2.0, 4.0]])
    todo = [("gradient", "sum(inv(A))", {"A": good}),
            ("gradient", "sum(inv(A))", {"A": singular}),  # linalg_error (422: 400 through gRPC's codes)
            ("gradient", "sum(inv(A))", {"A": good + 1}),
            ("gradient", "x * 2", {"x": [1.0, 2.0]}),  # opens (evaluate answers), the gradient refused
            ("taylor", "sum(x**3)", {"x": [1.0, 2.0], "v": [1.0, 0.0], "order": 99}),  # over max_taylor_order
            ("taylor", "sum(x**3)", {"x": [1.0, 2.0], "v": [1.0, 0.0], "order": 3}),
            ("gradient", "sum(x @ A)", {"x": [1.0, 2.0], "constants": {"A": np.ones((3, 3))}}),  # refused opening
            ("gradient", "sum(x +* 1)", {"x": [1.0]}),
            ("hvp", "sum(x**2)", {"x": [1.0, 2.0], "v": [1.0, 2.0, 3.0]}),  # a direction of another shape: gRPC
            ("gradient", "sum(x)", {"x": [1.0, 2.0], "wrt": ["z"]})]

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=60) as piped, \
                AsyncGrpcClient(grpc_target, timeout=60, session_transport="grpc") as unary:
            answers = await asyncio.gather(*[call(piped, m, f, kw) for m, f, kw in todo * 3])
            assert len(piped.pipelines) == 3  # inv, x * 2 and the Taylor series: each one session
            return answers, [await call(unary, m, f, kw) for m, f, kw in todo * 3]

    answers, unary = asyncio.run(main())
    for a, b in zip(answers, unary):
        same_answer(a, b)
    assert [type(a).__name__ for a in answers[:len(todo)]] == [
        "Result", "ClientError", "Result", "ShapeError", "LimitExceeded", "Result", "ShapeError", "ParseError",
        "ShapeError", "UnknownName"]
    assert (answers[1].status, answers[1].code) == (400, "linalg_error")


def test_a_function_the_server_lost_is_stored_again(grpc_target):
    A, b = np.random.default_rng(2).normal(size=(5, 3)), np.ones(5)
    x = np.array([0.5, -1.0, 2.0])

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=60) as c:
            stored = c.stored_functions
            lost = stored.opening({"dsl": LSQ}, {"A": A, "b": b})
            stored.remember(lost, "0" * 32)  # the client believes it stored it under an id the server never had
            r = await c.gradient(LSQ, x=x, constants={"A": A, "b": b})
            again = stored.opening({"dsl": LSQ}, {"A": A, "b": b})
            return r, again, len(c.pipelines)

    r, again, pipes = asyncio.run(main())
    np.testing.assert_allclose(r.gradient["x"], 2 * A.T @ (A @ x - b), rtol=1e-12)
    assert pipes == 1 and again.spec["id"] not in ("0" * 32, None)  # opened by the program, stored anew


def test_a_stopped_server_fails_the_asks_in_flight_and_the_next_call_recovers(serve, held):
    entered, release = held
    port, socket_port = free_port(), free_port()
    g = serve(port, session_socket_port=socket_port)
    x = np.array([0.3, -0.4, 1.1])

    async def main():
        async with AsyncGrpcClient(f"127.0.0.1:{port}", timeout=60, retries=0) as c:
            np.testing.assert_allclose((await c.gradient(ROSEN, x=x)).gradient["x"], rosenbrock_gradient(x))
            first = set(c.pipelines)
            in_flight = [asyncio.ensure_future(c.gradient(ROSEN, x=np.array([HOLD, i, 1.0]))) for i in range(5)]
            await asyncio.to_thread(entered.wait, 30)
            await asyncio.to_thread(g.stop, 0)
            failed = await asyncio.gather(*in_flight, return_exceptions=True)
            release.set()
            serve(port, session_socket_port=socket_port)
            r = await c.gradient(ROSEN, x=x)
            now = set(c.pipelines)
            return failed, r, first, now

    failed, r, first, now = asyncio.run(main())
    assert all(isinstance(e, dd.ConnectionFailed) and e.code == "connection_failed" for e in failed), failed
    np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(x), rtol=1e-13)
    assert len(now) == 1 and not now & first  # on a new connection to the new server's socket


def test_the_timeout_and_a_cancelled_call_leave_the_answers_in_order(grpc_target, held):
    entered, release = held
    rng = np.random.default_rng(8)

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=0.5) as c:
            await c.gradient(ROSEN, x=np.ones(3))  # the session open
            with pytest.raises(dd.RequestTimeout) as e:
                await c.gradient(ROSEN, x=np.array([HOLD, 1.0, 2.0]))  # held: no answer within 0.5 s
            assert e.value.code == "timeout"
            c.timeout = 60
            cancelled = asyncio.ensure_future(c.gradient(ROSEN, x=np.array([HOLD, 3.0, 4.0])))
            await asked(c, 2)  # behind the held one, which the server still holds
            cancelled.cancel()
            points = rng.normal(size=(6, 3))
            after = [asyncio.ensure_future(c.gradient(ROSEN, x=p)) for p in points]
            await asked(c, 8)  # the two answers to drop first, then these six
            release.set()
            answers = await asyncio.gather(*after)
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            return points, answers, len(c.pipelines)

    points, answers, pipes = asyncio.run(main())
    assert pipes == 1  # one connection all along: the late answers were read and dropped
    for p, r in zip(points, answers):
        np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(p), rtol=1e-13)


async def asked(client, count: int):
    """Until ``count`` asks are in flight on the client's connections (written, not answered)."""
    while sum(len(p.pending) for p in client.pipelines) < count:
        await asyncio.sleep(0)


def test_the_api_key_is_the_sockets(serve):
    g = serve(api_keys=["right-key"])
    target, x = f"127.0.0.1:{g.port}", np.array([0.1, 0.2, 0.3])

    async def main():
        async with AsyncGrpcClient(target, api_key="right-key") as c:
            r = await c.gradient(ROSEN, x=x)
            assert len(c.pipelines) == 1
        async with AsyncGrpcClient(target, api_key="wrong") as c, \
                AsyncGrpcClient(target, api_key="wrong", session_transport="grpc") as unary:
            errors = [await call(c, "gradient", ROSEN, {"x": x}), await call(unary, "gradient", ROSEN, {"x": x})]
            assert len(c.pipelines) == 0
        async with AsyncGrpcClient(target, api_key="right-key") as c:
            await c.pipelines._port()  # asked with the right key; the socket's hello then says "wrong"
            c.api_key = "wrong"
            fallback = await c.gradient(ROSEN, x=x)  # the socket refused: gRPC (its metadata has the right key)
            assert len(c.pipelines) == 0
        return r, errors, fallback

    r, (piped, unary), fallback = asyncio.run(main())
    for answer in (r, fallback):
        np.testing.assert_allclose(answer.gradient["x"], rosenbrock_gradient(x), rtol=1e-13)
    same_answer(piped, unary)
    assert (piped.status, piped.code) == (401, "unauthorized")


def test_pipelined_calls_count_against_the_rate_limit_as_unary_calls_do(serve):
    """A connection is no way around the rate limit: each pipelined call is a request, and those past the limit
    are refused with the unary call's 429 (gRPC's RESOURCE_EXHAUSTED told from a size limit's 413 by the
    error's code) while the others answer; the same on gRPC unary, each on a server of its own."""
    xs = np.random.default_rng(5).normal(size=(8, 3))

    async def main(transport):
        g = serve(rate_limit_requests=6, rate_limit_window_s=600)
        async with AsyncGrpcClient(f"127.0.0.1:{g.port}", retries=0, session_transport=transport) as c:
            return await asyncio.gather(*[call(c, "gradient", ROSEN, {"x": x}) for x in xs])

    for transport in ("auto", "grpc"):
        answers = asyncio.run(main(transport))
        refused = [a for a in answers if isinstance(a, dd.DerivdError)]
        assert 0 < len(refused) < len(xs)
        assert all((e.status, e.code) == (429, "rate_limited") for e in refused)
        for x, a in zip(xs, answers):
            if not isinstance(a, dd.DerivdError):
                np.testing.assert_allclose(a.gradient["x"], rosenbrock_gradient(x), rtol=1e-13)


def test_without_the_socket_every_call_goes_over_grpc(serve, grpc_target):
    off = serve(session_socket_port=-1)
    x, v = np.array([0.4, -0.2, 0.9]), np.array([1.0, 0.5, -1.0])

    async def gradients(target, **kw):
        async with AsyncGrpcClient(target, **kw) as c:
            answers = await asyncio.gather(*[c.gradient(ROSEN, x=x) for _ in range(5)])
            return answers, len(c.pipelines), c._session_port

    async def unexpressed():  # what a session cannot express goes over gRPC on a client that has the socket
        async with AsyncGrpcClient(grpc_target, timeout=60) as c:
            answers = [await c.gradient(ROSEN, x=x, fd={"method": "central"}),
                       await c.gradient(ROSEN, x=x, verify=True),
                       await c.jacobian(ROSEN, x=x, sparse=True),
                       await c.jvp(ROSEN, x=x, v=v), await c.vjp(ROSEN, x=x, u=[1.0]),
                       await c.derivatives(ROSEN, x=x, order=2)]
            return answers, len(c.pipelines)

    async def unreachable():
        async with AsyncGrpcClient(grpc_target) as c:
            c._session_port = free_port()  # the socket not reachable from here (a proxy): gRPC from now on
            return await c.gradient(ROSEN, x=x), len(c.pipelines), c._session_port

    for target, kw in ((f"127.0.0.1:{off.port}", {}), (grpc_target, {"session_transport": "grpc"})):
        answers, pipes, _ = asyncio.run(gradients(target, **kw))
        assert pipes == 0
        for r in answers:
            np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(x), rtol=1e-13)
    answer, pipes, port = asyncio.run(unreachable())
    assert pipes == 0 and port == 0
    np.testing.assert_allclose(answer.gradient["x"], rosenbrock_gradient(x), rtol=1e-13)
    answers, pipes = asyncio.run(unexpressed())
    assert pipes == 0
    assert answers[1]["verification"]["passed"] and "jacobian" in answers[2]
    np.testing.assert_allclose(answers[0].gradient["x"], rosenbrock_gradient(x), rtol=1e-6)
    np.testing.assert_allclose(answers[3]["jvp"], [rosenbrock_gradient(x) @ v], rtol=1e-13)



def test_slow_asks_spread_over_connections_and_the_least_recently_used_are_closed(grpc_target, monkeypatch):
    from derivd_client import pipeline

    monkeypatch.setattr(pipeline, "BACKLOG_S", 0.0)  # every ask counts as slow: a function widens to WIDTH
    monkeypatch.setattr(pipeline, "MAX_OPEN", pipeline.WIDTH + 1)
    points = np.random.default_rng(4).normal(size=(40, 4))

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=60) as c:
            await c.gradient(ROSEN, x=points[0])
            answers = []
            for chunk in np.split(points, 4):  # each turn finds the connections idle, so opens another
                answers += await asyncio.gather(*[c.gradient(ROSEN, x=p) for p in chunk])
            wide = len(c.pipelines)
            others = [await c.evaluate(f"sum(x) * {k}", x=[1.0, 2.0]) for k in range(3)]
            return answers, wide, others, len(c.pipelines)

    answers, wide, others, pipes = asyncio.run(main())
    for p, r in zip(points, answers):
        np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(p), rtol=1e-13)
    assert [r.value for r in others] == [0.0, 3.0, 6.0]
    assert wide == pipeline.WIDTH and pipes == 3  # the second sum's opening retired the Rosenbrock's four
