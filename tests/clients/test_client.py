"""Every SDK method against a live server over real HTTP: the numbers equal the server's own REST
answer (raw httpx) and an independent reference (analytic derivatives written here in numpy)."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.references import rosenbrock, rosenbrock_gradient, rosenbrock_hessian

ROSENBROCK = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
VECTOR = "[x[0]*sin(x[1]), exp(x[0]) + x[1]**2, x[2]*x[0]]"
X = np.array([1.2, 0.5, -0.3, 0.8])
X3 = np.array([0.7, -1.1, 2.0])


def vector_value(x):
    return np.array([x[0] * np.sin(x[1]), np.exp(x[0]) + x[1] ** 2, x[2] * x[0]])


def vector_jac(x):
    return np.array([[np.sin(x[1]), x[0] * np.cos(x[1]), 0.0],
                     [np.exp(x[0]), 2 * x[1], 0.0],
                     [x[2], 0.0, x[0]]])


def rest(client, endpoint, body):
    r = client.post(f"/v1/{endpoint}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_evaluate(sdk, client):
    r = sdk.evaluate(VECTOR, x=X3)
    np.testing.assert_allclose(r.value, vector_value(X3), rtol=1e-14)
    np.testing.assert_array_equal(r.value, rest(client, "evaluate", {"function": {"dsl": VECTOR},
                                                                     "at": {"x": X3.tolist()}})["value"])
    assert set(r.timing) >= {"compile", "queue", "compute"}


def test_gradient(sdk, client):
    r = sdk.gradient(ROSENBROCK, {"x": X})
    assert r.value == pytest.approx(rosenbrock(X), rel=1e-14)
    np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(X), rtol=1e-13)
    raw = rest(client, "gradient", {"function": {"dsl": ROSENBROCK}, "at": {"x": X.tolist()}})
    np.testing.assert_array_equal(r.gradient["x"], raw["gradient"]["x"])
    assert r.engine == raw["engine"]


def test_gradient_several_inputs_and_constants(sdk):
    a, y = np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([0.3, -0.2])
    r = sdk.gradient("sum((A @ y - b)**2) * s", at={"A": a, "s": 1.5}, constants={"b": [1.0, 2.0]}, y=y)
    resid = a @ y - np.array([1.0, 2.0])
    np.testing.assert_allclose(r.gradient["A"], 1.5 * 2 * np.outer(resid, y), rtol=1e-14)
    np.testing.assert_allclose(r.gradient["y"], 1.5 * 2 * a.T @ resid, rtol=1e-14)
    assert r.gradient["s"] == pytest.approx(np.sum(resid ** 2), rel=1e-14)
    only = sdk.gradient("sum((A @ y - b)**2) * s", at={"A": a, "s": 1.5, "y": y}, constants={"b": [1.0, 2.0]},
                        wrt=["y"])
    assert list(only.gradient) == ["y"]


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian_dense_and_sparse(sdk, client, mode):
    r = sdk.jacobian(VECTOR, x=X3, mode=mode)
    np.testing.assert_allclose(r.jacobian, vector_jac(X3), rtol=1e-14, atol=1e-15)
    assert r.shape == (3, 3) and r.engine == mode
    raw = rest(client, "jacobian", {"function": {"dsl": VECTOR}, "at": {"x": X3.tolist()}, "mode": mode})
    np.testing.assert_array_equal(r.jacobian, raw["jacobian"])
    s = sdk.jacobian(VECTOR, x=X3, mode=mode, sparse=True)
    assert isinstance(s.jacobian, dd.SparseJacobian)
    np.testing.assert_array_equal(s.jacobian.toarray(), r.jacobian)
    assert len(s.jacobian.values) == np.count_nonzero(vector_jac(X3))


def test_jvp_and_vjp(sdk, client):
    v, u = np.array([0.3, -1.0, 2.0]), np.array([1.0, -2.0, 0.5])
    r = sdk.jvp(VECTOR, x=X3, v=v)  # one input: a bare array is its direction
    np.testing.assert_allclose(r.jvp, vector_jac(X3) @ v, rtol=1e-14)
    raw = rest(client, "jvp", {"function": {"dsl": VECTOR}, "at": {"x": X3.tolist()}, "v": {"x": v.tolist()}})
    np.testing.assert_array_equal(r.jvp, raw["jvp"])
    r = sdk.vjp(VECTOR, x=X3, u=u)
    np.testing.assert_allclose(r.vjp["x"], u @ vector_jac(X3), rtol=1e-14)
    raw = rest(client, "vjp", {"function": {"dsl": VECTOR}, "at": {"x": X3.tolist()}, "u": u.tolist()})
    np.testing.assert_array_equal(r.vjp["x"], raw["vjp"]["x"])


def test_hvp_and_hessian(sdk):
    v = np.array([1.0, -0.5, 0.25, 2.0])
    r = sdk.hvp(ROSENBROCK, x=X, v={"x": v})
    np.testing.assert_allclose(r.hvp["x"], rosenbrock_hessian(X) @ v, rtol=1e-12)
    directions = np.random.default_rng(5).normal(size=(3, 4))
    batch = sdk.hvp(ROSENBROCK, x=X, vs=list(directions))  # many directions, one request
    np.testing.assert_allclose([h["x"] for h in batch.hvps], directions @ rosenbrock_hessian(X), rtol=1e-12)
    with pytest.raises(TypeError):
        sdk.hvp(ROSENBROCK, x=X)
    h = sdk.hessian(ROSENBROCK, x=X)
    np.testing.assert_allclose(h.hessian, rosenbrock_hessian(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h.gradient["x"], rosenbrock_gradient(X), rtol=1e-13)


def test_taylor(sdk):
    # f(x + t v) = sin(x + t v): c_k = v^k sin^(k)(x) / k!
    x, v, k = 0.4, 1.5, 5
    r = sdk.taylor("sin(x)", x=x, v=v, order=k)
    derivs = [np.sin(x), np.cos(x), -np.sin(x), -np.cos(x)]
    expected = [v ** j * derivs[j % 4] / math.factorial(j) for j in range(k + 1)]
    np.testing.assert_allclose(np.asarray(r.coefficients).reshape(k + 1, -1)[:, 0], expected, rtol=1e-12)


def test_stored_function(sdk):
    ref = sdk.register_function("sum(a * x**2)", constants={"a": [1.0, 2.0, 3.0]})
    assert isinstance(ref, dd.FunctionRef) and set(ref.inputs) == {"a", "x"}
    r = sdk.gradient(ref, x=X3)
    np.testing.assert_allclose(r.gradient["x"], 2 * np.array([1.0, 2.0, 3.0]) * X3, rtol=1e-15)
    stored = sdk.get_function(ref.id)
    assert stored["dsl"] == "sum(a * x**2)"


def test_large_arrays_travel_as_base64(server):
    """At the threshold, arrays go base64 both ways; the numbers are the same as with lists."""
    sent = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request):
            sent.append(request.read())
            return super().handle_request(request)

    x = np.linspace(-1, 1, 3000)
    with dd.Client(server.url, transport=Recording(), base64_threshold=1000) as c:
        r = c.gradient("sum(sin(x) * x)", x=x)
    body = json.loads(sent[-1])
    assert set(body["at"]["x"]) == {"dtype", "shape", "data"} and body["encoding"] == "base64"
    np.testing.assert_allclose(r.gradient["x"], np.sin(x) + x * np.cos(x), rtol=1e-14, atol=1e-16)
    with dd.Client(server.url, base64_threshold=10**9) as c:
        lists = c.gradient("sum(sin(x) * x)", x=x)
    np.testing.assert_array_equal(r.gradient["x"], lists.gradient["x"])


@pytest.mark.parametrize("threshold", [1, 10**6])
def test_non_finite_numbers_decode(server, threshold):
    with dd.Client(server.url, base64_threshold=threshold) as c:
        r = c.evaluate("[log(x), sqrt(x - 1), -log(x)]", x=np.array([0.0]))
    assert r.value[0] == -np.inf and np.isnan(r.value[1]) and r.value[2] == np.inf
    with dd.Client(server.url, base64_threshold=threshold) as c:  # and non-finite inputs encode
        r = c.evaluate("x * 2", x=np.array([np.inf, -np.inf, 1.0]))
    assert r.value[0] == np.inf and r.value[1] == -np.inf and r.value[2] == 2.0


def test_python_function_is_traced_on_the_fly(sdk):
    def f(x, w):
        return dd.sum(dd.tanh(w @ x) ** 2)

    w = np.array([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7]])
    r = sdk.gradient(f, x=X3, w=w)
    t = np.tanh(w @ X3)
    np.testing.assert_allclose(r.gradient["x"], w.T @ (2 * t * (1 - t ** 2)), rtol=1e-13)
    assert r.value == pytest.approx(f(X3, w), rel=1e-14)


def test_async_client_matches_sync(server, sdk):
    async def many():
        async with dd.AsyncClient(server.url) as c:
            return await asyncio.gather(*(c.gradient(ROSENBROCK, x=X * s) for s in (1.0, 0.5, -2.0)))

    results = asyncio.run(many())
    for s, r in zip((1.0, 0.5, -2.0), results):
        np.testing.assert_array_equal(r.gradient["x"], sdk.gradient(ROSENBROCK, x=X * s).gradient["x"])
        np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(X * s), rtol=1e-13)


def test_async_client_raises_typed_errors(server):
    async def bad():
        async with dd.AsyncClient(server.url) as c:
            await c.evaluate("x +* 1", x=1.0)

    with pytest.raises(dd.ParseError) as info:
        asyncio.run(bad())
    assert info.value.detail["line"] == 1


def test_blackbox_lifecycle_and_gradient(loopback_server):
    from tests.support import BlackBoxServer

    def f(x):
        return np.array([np.sum(np.sin(x) * x)])

    x = np.array([0.3, -0.8, 1.1])
    with BlackBoxServer({"/sinx": f}) as box, dd.Client(loopback_server.url) as c:
        bb = c.register_blackbox("sinx", box.url("/sinx"), input_size=3, output_size=1, timeout_s=5.0)
        assert isinstance(bb, dd.Blackbox) and bb.name == "sinx" and bb.input_size == 3
        assert "sinx" in [b.name for b in c.list_blackboxes()]
        r = c.gradient(bb, x=x)
        np.testing.assert_allclose(r.gradient["x"], np.sin(x) + x * np.cos(x), rtol=1e-6)
        assert box.paths().count("/sinx") > 0
        c.delete_blackbox("sinx")
        assert "sinx" not in [b.name for b in c.list_blackboxes()]
        with pytest.raises(dd.NotFound):
            c.delete_blackbox("sinx")
