"""AsyncGrpcClient: 50 gradients in flight on one connection answer as the blocking clients and the analytic
reference do, in order of the calls; errors are the same typed exceptions; an asynchronous session answers
each kind as the references do, several calls in flight included."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.references import rosenbrock_gradient, rosenbrock_hessian

pytest.importorskip("grpc")
pytest.importorskip("derivd.grpc_api.server")
from derivd_client.grpc_client import AsyncGrpcClient  # noqa: E402

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"



def test_fifty_concurrent_gradients(grpc_target, sdk):
    points = np.random.default_rng(9).normal(size=(50, 7))

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=60) as c:
            return await asyncio.gather(*[c.gradient(ROSEN, x=p) for p in points])

    answers = asyncio.run(main())
    for p, r in zip(points, answers):
        np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(p), rtol=1e-12, atol=1e-12)
        # the same answer as the blocking client's, to the agreement the two compile tiers keep (a hot
        # tape may answer from XLA, whose sums round differently from numpy's in the last bits)
        np.testing.assert_allclose(r.gradient["x"], sdk.gradient(ROSEN, x=p).gradient["x"], rtol=1e-13)
        assert set(r.timing) == {"compile", "queue", "compute"}


def test_errors_are_typed_and_hvp_streams_stay_with_the_blocking_client(grpc_target):
    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=30) as c:
            with pytest.raises(dd.ParseError):
                await c.evaluate("x +* 1", x=1.0)
            with pytest.raises(dd.UnknownName):
                await c.gradient("sum(x) + y", x=[1.0])
            with pytest.raises(TypeError):
                c.hvp_stream(ROSEN, {"x": [1.0, 2.0]}, [[1.0, 0.0]])
            h = await c.hessian(ROSEN, x=[1.0, 2.0])
            return h.hessian

    np.testing.assert_allclose(asyncio.run(main()), rosenbrock_hessian(np.array([1.0, 2.0])), rtol=1e-14)


@pytest.mark.parametrize("transport", ["grpc", "socket", "auto"])
def test_an_async_session_answers_as_the_references(grpc_target, transport):
    from derivd_client.session import AsyncSession
    from derivd_client.session_socket import AsyncSocketSession

    kind = AsyncSession if transport == "grpc" else AsyncSocketSession  # the server offers the socket

    rng = np.random.default_rng(12)
    x0 = rng.normal(size=6)

    async def main():
        async with AsyncGrpcClient(grpc_target, timeout=60, session_transport=transport) as c:
            async with await c.session(ROSEN, {"x": x0}) as s:
                assert type(s) is kind and s.n == 6
                checks = []
                for _ in range(3):
                    x, v = rng.normal(size=6), rng.normal(size=6)
                    value, grad = await s.value_and_grad(x)
                    hv = await s.hvp(x, v)
                    checks.append((x, v, value, grad, hv, await s.hessian(x)))
                with pytest.raises(dd.ClientError):
                    await s.gradient(np.zeros(2))
                # several calls in flight on one session: answered in order, each its own
                xs = rng.normal(size=(5, 6))
                grads = await asyncio.gather(*[s.gradient(x) for x in xs])
                return checks, xs, grads, s.requests

    checks, xs, grads, requests = asyncio.run(main())
    for x, v, value, grad, hv, H in checks:
        assert value == pytest.approx(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), rel=1e-14)
        np.testing.assert_allclose(grad, rosenbrock_gradient(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(hv, rosenbrock_hessian(x) @ v, rtol=1e-12, atol=1e-11)
        np.testing.assert_allclose(H, rosenbrock_hessian(x), rtol=1e-12, atol=1e-11)
    for x, g in zip(xs, grads):
        np.testing.assert_allclose(g, rosenbrock_gradient(x), rtol=1e-12, atol=1e-12)
    assert requests == 1 + 3 * 3 + 1 + 5
