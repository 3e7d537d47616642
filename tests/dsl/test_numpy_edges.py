"""numpy's values at the edges of the newer functions, and their documented derivatives there:
sinc at 0 (smooth: its series), heaviside at 0, fmax/fmin with NaN and ties, nan_to_num of
non-finite entries, sort/median/quantile ties, cumprod through zeros; and the second order of
the compositions (forward over reverse) against finite differences of their gradients."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from tests.dsl.support import SecondOrder, call
from tests.references import fd_jacobian

NAN, INF = float("nan"), float("inf")


def gradient(dsl, at, constants=None):
    return {mode: call("gradient", dsl, at, constants, mode=mode)["gradient"] for mode in ("forward", "reverse")}


def test_sinc_is_smooth_at_zero():
    """sinc(x) = 1 - π²x²/6 + ...: value 1, slope 0, second derivative -π²/3 at 0."""
    value, g, h = SecondOrder("sinc(x)", {"x": 0.0})({"x": 0.0})
    assert value == 1.0 and g[0] == 0.0
    assert h[0, 0] == pytest.approx(-math.pi ** 2 / 3, rel=1e-12)
    # and near 0, on either side of the series' range, the analytic derivative
    for x in (0.05, 0.0999, 0.1, 0.3):
        want = (math.cos(math.pi * x) - math.sin(math.pi * x) / (math.pi * x)) / x
        for got in gradient("sinc(x)", {"x": x}).values():
            assert float(got["x"]) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_heaviside_at_zero_takes_h0():
    x = [-1.0, 0.0, 2.0]
    assert call("evaluate", "heaviside(x, h)", {"x": x, "h": 0.5})["value"] == pytest.approx(np.heaviside(x, 0.5))
    for g in gradient("sum(heaviside(x, h))", {"x": x, "h": 0.5}).values():
        np.testing.assert_array_equal(g["x"], 0.0)
        assert float(g["h"]) == 1.0  # one entry at 0


def test_fmax_fmin_ignore_nan_and_split_ties():
    a, b = [NAN, 1.0, 2.0], [3.0, NAN, 2.0]
    for name in ("fmax", "fmin"):
        value = call("evaluate", f"{name}(a, b)", {"a": a, "b": b})["value"]
        np.testing.assert_array_equal(value, getattr(np, name)(a, b))
        for g in gradient(f"sum({name}(a, b))", {"a": a, "b": b}).values():
            np.testing.assert_array_equal(g["a"], [0.0, 1.0, 0.5])
            np.testing.assert_array_equal(g["b"], [1.0, 0.0, 0.5])


def test_nan_to_num_values_and_derivative():
    x = [NAN, INF, -INF, 1.5]
    got = call("evaluate", "nan_to_num(x)", {"x": x})["value"]
    np.testing.assert_array_equal(got, np.nan_to_num(np.array(x)))
    got = call("evaluate", "nan_to_num(x, nan=1.0, posinf=2.0, neginf=-2.0)", {"x": x})["value"]
    np.testing.assert_array_equal(got, np.nan_to_num(np.array(x), nan=1.0, posinf=2.0, neginf=-2.0))
    for g in gradient("sum(nan_to_num(x) * 3.0)", {"x": [0.5, 1.5]}).values():
        np.testing.assert_array_equal(g["x"], [3.0, 3.0])


def test_sort_ties_follow_the_stable_order():
    """Equal entries: the k-th sorted one is the k-th in input order, and carries its derivative."""
    x = [2.0, 1.0, 2.0, 0.0]
    weights = [1.0, 10.0, 100.0, 1000.0]  # sorted position weights
    for g in gradient("sum(sort(x) * w)", {"x": x}, {"w": weights}).values():
        np.testing.assert_array_equal(g["x"], [100.0, 10.0, 1000.0, 1.0])


def test_median_of_an_even_count_averages_the_middle_two():
    x = [4.0, 1.0, 3.0, 2.0]
    assert float(call("evaluate", "median(x)", {"x": x})["value"]) == np.median(x)
    for g in gradient("median(x)", {"x": x}).values():
        np.testing.assert_array_equal(g["x"], [0.0, 0.0, 0.5, 0.5])


@pytest.mark.parametrize("q", [0.0, 0.25, 0.4, 0.5, 0.9, 1.0])
def test_quantile_is_numpy_linear_with_its_interpolation_weights(q):
    x = np.array([0.3, -1.2, 2.5, 0.7, 1.1])
    assert float(call("evaluate", f"quantile(x, {q})", {"x": x})["value"]) == np.quantile(x, q)
    i = q * (len(x) - 1)
    lo, frac = int(math.floor(i)), i - math.floor(i)
    order = np.argsort(x)
    want = np.zeros(len(x))
    want[order[lo]] += 1 - frac
    want[order[min(lo + 1, len(x) - 1)]] += frac
    for g in gradient(f"quantile(x, {q})", {"x": x}).values():
        np.testing.assert_allclose(g["x"], want, rtol=1e-15, atol=1e-15)


def test_cumprod_is_exact_through_zeros():
    """d/dx_j of prod(x[:i+1]) is the product of the others: no 0/0 where an entry is 0."""
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    assert call("evaluate", "cumprod(x)", {"x": x})["value"] == pytest.approx(np.cumprod(x))
    want = np.array([[np.prod(np.delete(x[: i + 1], j)) if j <= i else 0.0 for j in range(5)] for i in range(5)])
    for mode in ("forward", "reverse"):
        np.testing.assert_array_equal(np.reshape(call("jacobian", "cumprod(x)", {"x": x}, mode=mode)["jacobian"],
                                                 (5, 5)), want)


def test_var_with_ddof_at_the_count_is_numpy_inf_or_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns of ddof >= n and answers anyway
        want = np.var([1.0, 2.0], ddof=2)
    got = call("evaluate", "var(x, ddof=2)", {"x": [1.0, 2.0]})["value"]
    np.testing.assert_array_equal(got, want)


RNG = np.random.default_rng(3)
SECOND_ORDER = [
    ("sum(sort(v) ** 3 * arange(5))", {"v": RNG.normal(size=5)}),
    ("median(v ** 3) + quantile(v ** 2, 0.3) * sum(v)", {"v": RNG.normal(size=5)}),
    ("var(X, axis=0, ddof=1)[1] + sum(einsum('ij,kj->ik', X, X) ** 2)", {"X": RNG.normal(size=(3, 4))}),
    ("sum(cumprod(v) ** 2) + sum(diff(v, n=2) ** 3)", {"v": RNG.normal(size=5)}),
    ("sum(logsumexp(X, axis=1, b=X * X, keepdims=True) * X)", {"X": RNG.normal(size=(3, 4))}),
    ("sum(logaddexp(v, v * v) + sinc(v) * fmax(v, 0.1) + logaddexp2(v, 0.5))", {"v": RNG.normal(size=5)}),
    ("sum(cross(X[:, :3], X[:, 1:]) ** 2) + sum(kron(X[:2, :2], X[1:, 2:]) ** 2)", {"X": RNG.normal(size=(3, 4))}),
]


@pytest.mark.parametrize("dsl,at", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
def test_second_order_of_the_compositions(dsl, at):
    """The Hessian (forward over reverse) equals finite differences of the reverse gradient."""
    (name,) = at
    _, gradient0, hessian = SecondOrder(dsl, at)(at)
    fd = fd_jacobian(lambda **kw: np.ravel(call("gradient", dsl, kw)["gradient"][name]), at)
    np.testing.assert_allclose(hessian, fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))
    np.testing.assert_allclose(gradient0, np.ravel(call("gradient", dsl, at, mode="forward")["gradient"][name]),
                               rtol=1e-12, atol=1e-12)


def test_a_helper_may_shadow_a_function_beyond_the_contract_but_not_the_contracts():
    """Programs that define their own ``cross`` or ``var`` keep working (the helper wins, as a
    Python def would); the contract's names stay reserved."""
    program = "def var(a): return a * 2\ndef cross(a, b): return a - b\nsum(cross(var(x), x))"
    assert float(call("evaluate", program, {"x": [1.0, 2.0]})["value"]) == 3.0
    with pytest.raises(Exception, match="shadows a builtin"):
        call("evaluate", "def sum(a): return a\nsum(x)", {"x": [1.0, 2.0]})
