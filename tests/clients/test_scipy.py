"""derivd_client.scipy through a real server (gRPC sessions and the REST client): the Objective's pieces
equal scipy's own rosen_der / rosen_hess_prod / rosen_hess, and minimize, least_squares and root reach
the answers scipy reaches with analytic derivatives, in one request per point for ``jac=True``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
from scipy.optimize import rosen, rosen_der, rosen_hess, rosen_hess_prod

from tests.clients.conftest import dd
from tests.references import rosenbrock_hessian

pytest.importorskip("grpc")
pytest.importorskip("derivd.grpc_api.server")
from derivd_client import scipy as dds  # noqa: E402

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
X0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2, 0.9, 1.1, 0.6])  # scipy tutorial's start, extended


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_objective_pieces_equal_scipys_rosenbrock(transport, rpc, sdk):
    client = rpc if transport == "grpc" else sdk
    rng = np.random.default_rng(5)
    with dds.Objective(client, ROSEN, X0) as obj:
        for _ in range(3):
            x, p = rng.normal(size=X0.size), rng.normal(size=X0.size)
            value, grad = obj.value_and_grad(x)
            assert np.isclose(value, rosen(x), rtol=1e-14)
            np.testing.assert_allclose(grad, rosen_der(x), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(obj.hessp(x, p), rosen_hess_prod(x, p), rtol=1e-12, atol=1e-11)
            np.testing.assert_allclose(obj.hess(x), rosen_hess(x), rtol=1e-12, atol=1e-11)
        before = obj.requests
        x = rng.normal(size=X0.size)
        obj.fun(x), obj.jac(x), obj.fun(x), obj.value_and_grad(x)
        assert obj.requests == before + 1, "value and gradient at one point are one request"


@pytest.mark.parametrize("method", ["trust-ncg", "Newton-CG", "trust-constr", "L-BFGS-B", "BFGS", "trust-exact"])
def test_minimize_reaches_what_scipy_reaches_with_analytic_derivatives(method, rpc):
    res = dds.minimize(ROSEN, X0, method=method, client=rpc)
    hess = {"trust-exact": {"hess": rosen_hess}, "trust-constr": {"hessp": rosen_hess_prod},
            "trust-ncg": {"hessp": rosen_hess_prod}, "Newton-CG": {"hessp": rosen_hess_prod}}.get(method, {})
    ref = so.minimize(rosen, X0, method=method, jac=rosen_der, **hess)
    assert res.success and ref.success
    np.testing.assert_allclose(res.x, np.ones(X0.size), atol=2e-3)  # Newton-CG stops at its xtol
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert abs(res.nit - ref.nit) <= max(2, ref.nit // 10)
    assert res.requests + 1 >= res.nit and res.server_seconds > 0  # the opening answers the first point
    if method in ("L-BFGS-B", "BFGS"):  # jac=True: one request per function evaluation, the first the opening
        assert res.requests == res.nfev
        assert res.requests_per_iteration <= 1.2 * res.nfev / res.nit


def test_minimize_a_python_function_with_constants_over_rest(sdk):
    """min_x ||A x - b||^2 + lam ||x||^2 has x = (A^T A + lam I)^{-1} A^T b."""
    rng = np.random.default_rng(2)
    A, b, lam = rng.normal(size=(12, 4)), rng.normal(size=12), 0.3

    def f(w, A, b):
        r = A @ w - b
        return dd.sum(r * r) + 0.3 * dd.sum(w * w)

    res = dds.minimize(f, np.zeros(4), method="trust-ncg", client=sdk, constants={"A": A, "b": b},
                       options={"gtol": 1e-10})  # passed on to scipy
    want = np.linalg.solve(A.T @ A + lam * np.eye(4), A.T @ b)
    np.testing.assert_allclose(res.x, want, rtol=1e-7, atol=1e-9)


def test_least_squares_recovers_an_exponential(rpc):
    t = np.linspace(0, 1, 15)
    y = 2.5 * np.exp(-1.3 * t) + 0.5
    res = dds.least_squares("p[0] * exp(p[1] * t) + p[2] - y", np.array([1.0, 0.0, 0.0]), client=rpc,
                            constants={"t": t, "y": y}, name="p")
    np.testing.assert_allclose(res.x, [2.5, -1.3, 0.5], rtol=1e-8)
    assert res.requests <= res.nfev + 1  # residuals and Jacobian at a point: one request


def test_root_solves_scipys_example(rpc):
    """scipy's root example: x0 + (x0 - x1)^3 / 2 = 1, (x1 - x0)^3 / 2 + x1 = 0."""
    F = "stack([x[0] + 0.5*(x[0] - x[1])**3 - 1, 0.5*(x[1] - x[0])**3 + x[1]])"
    res = dds.root(F, np.zeros(2), client=rpc)

    def ref_F(x):
        return [x[0] + 0.5 * (x[0] - x[1]) ** 3 - 1.0, 0.5 * (x[1] - x[0]) ** 3 + x[1]]

    def ref_J(x):
        d = 1.5 * (x[0] - x[1]) ** 2
        return np.array([[1 + d, -d], [-d, 1 + d]])

    ref = so.root(ref_F, np.zeros(2), jac=ref_J, method="hybr")
    assert res.success
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10)
    np.testing.assert_allclose(ref_F(res.x), 0, atol=1e-10)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_hessp_policies_equal_the_analytic_hessian_vector_product(transport, rpc, sdk):
    """Dense (the point's Hessian, fetched once, times p) and stream (one HVP request per product) give
    H(x) p from the tridiagonal Hessian written out, to rounding; dense asks once per point."""
    client = rpc if transport == "grpc" else sdk
    rng = np.random.default_rng(11)
    with dds.Objective(client, ROSEN, X0, hessp="dense") as dense, \
            dds.Objective(client, ROSEN, X0, hessp="stream") as stream:
        for _ in range(3):
            x, ps = rng.normal(size=X0.size), rng.normal(size=(3, X0.size))
            want = [rosenbrock_hessian(x) @ p for p in ps]
            before = dense.requests, stream.requests
            for p, w in zip(ps, want):
                np.testing.assert_allclose(dense.hessp(x, p), w, rtol=1e-12, atol=1e-10)
                np.testing.assert_allclose(stream.hessp(x, p), w, rtol=1e-12, atol=1e-10)
            value, grad = dense.value_and_grad(x)
            np.testing.assert_allclose(dense.hess(x), rosenbrock_hessian(x), rtol=1e-12, atol=1e-10)
            assert np.isclose(value, rosen(x), rtol=1e-14)
            np.testing.assert_allclose(grad, rosen_der(x), rtol=1e-12, atol=1e-12)
            assert dense.requests - before[0] == 1, "value, gradient, Hessian and its products: one request"
            assert stream.requests - before[1] == 3, "one request per product"


def test_hessp_auto_is_dense_up_to_its_bound_then_streams(rpc):
    n = dds.DENSE_HESSP_MAX_N
    rng = np.random.default_rng(3)
    for size, dense in ((n, True), (n + 1, False)):
        x, p = rng.normal(size=size), rng.normal(size=size)
        with dds.Objective(rpc, ROSEN, x) as obj:
            assert obj.dense_hessp is dense
            before = obj.requests
            np.testing.assert_allclose(obj.hessp(x, p), rosenbrock_hessian(x) @ p, rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(obj.hessp(x, -p), -rosenbrock_hessian(x) @ p, rtol=1e-12, atol=1e-9)
            assert obj.requests - before == (1 if dense else 2)
    with pytest.raises(ValueError, match="hessp must be one of"):
        dds.Objective(rpc, ROSEN, X0, hessp="sparse")


class Points:
    """The distinct points scipy asks an Objective about, and how many products it asks for."""

    def __init__(self, obj):
        self.obj, self.seen, self.products = obj, set(), 0

    def value_and_grad(self, x):
        self.seen.add(np.asarray(x, dtype=np.float64).tobytes())
        return self.obj.value_and_grad(x)

    def hessp(self, x, p):
        self.seen.add(np.asarray(x, dtype=np.float64).tobytes())
        self.products += 1
        return self.obj.hessp(x, p)

    def hess(self, x):
        self.seen.add(np.asarray(x, dtype=np.float64).tobytes())
        return self.obj.hess(x)


@pytest.mark.parametrize("method,second", [("trust-ncg", "hessp"), ("Newton-CG", "hessp"),
                                           ("trust-constr", "hess"), ("trust-constr", "hessp")])
@pytest.mark.parametrize("policy", ["dense", "stream"])
def test_round_trips_are_one_per_point_with_the_hessian(method, second, policy, rpc):
    """Counted over a real server: with the Hessian at hand (dense hessp, or hess) each point scipy
    visits is one request (the first point twice: its gradient comes before scipy asks for curvature);
    streamed products add one request each. minimize's own count is that, less the first point's: its
    opening answers the first point with what each later point is asked (the Hessian, or the gradient)."""
    with dds.Objective(rpc, ROSEN, X0, hessp=policy) as obj:
        spy = Points(obj)
        res = so.minimize(spy.value_and_grad, X0, method=method, jac=True, **{second: getattr(spy, second)})
        assert res.success
        if policy == "dense" or second == "hess":
            assert obj.requests == 1 + len(spy.seen) + 1
        else:
            assert obj.requests == 1 + len(spy.seen) + spy.products
    counted = dds.minimize(ROSEN, X0, method=method, client=rpc, hessian=second, hessp=policy)
    np.testing.assert_allclose(counted.x, res.x, rtol=1e-12)
    per_point = policy == "dense" or second == "hess"
    assert counted.requests == (len(spy.seen) if per_point else obj.requests - 1)
    assert counted.requests_per_iteration == counted.requests / counted.nit
    if per_point:
        assert counted.requests_per_iteration <= 1.2 * len(spy.seen) / res.nit
