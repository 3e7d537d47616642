"""Taylor coefficients against closed-form series, to order 12.

c_k of f(x + t v) for exp, sin, 1/(1-t), log1p, atan, sqrt(1+t) and tanh, at
several points at once (x and v are vectors; the function acts elementwise),
from formulas that share nothing with the recurrences: derivatives in closed
form, binomial series, Bernoulli numbers. Then identities on general input
curves x(t) = x_0 + x_1 t + ... + x_K t^K (every coefficient random, not just a
line), which exercise every recurrence on full series: log(exp(x)) = x,
sin² + cos² = 1, tan(atan(x)) = x, ...
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.dsl import InputSpec
from derivd.engines import forward
from derivd.engines import taylor as taylor_engine
from derivd.engines.function import CompiledFunction
from derivd.transforms.taylor import taylor

K = 12
SETTINGS = Settings()
X = np.array([0.0, 0.3, -0.45])
V = np.array([1.0, 0.7, -1.2])


def coefficients(source, x, v, order=K):
    fn = CompiledFunction(source, {"x": InputSpec(x.shape, "f8", "at")}, SETTINGS)
    _, c, _ = taylor_engine.coefficients(fn, {"x": x}, ["x"], {"x": v}, order, SETTINGS)
    return c.reshape(order + 1, *x.shape)


def bernoulli(n):
    """B_0..B_n (B_1 = -1/2), exactly, by the Akiyama–Tanigawa algorithm."""
    out, a = [], [Fraction(0)] * (n + 1)
    for m in range(n + 1):
        a[m] = Fraction(1, m + 1)
        for j in range(m, 0, -1):
            a[j - 1] = j * (a[j - 1] - a[j])
        out.append(a[0])
    out[1] = -out[1]
    return out


def tanh_at_zero(k):
    """tanh t = Σ_{n>=1} 2^{2n} (2^{2n} - 1) B_{2n} t^{2n-1} / (2n)!."""
    if k % 2 == 0:
        return 0.0
    n = (k + 1) // 2
    return float(2 ** (2 * n) * (2 ** (2 * n) - 1) * bernoulli(2 * n)[2 * n] / math.factorial(2 * n))


def series_divide(a, b):
    """Coefficients of a(t) / b(t), both truncated power series (plain long division)."""
    q = np.zeros_like(a)
    for k in range(len(a)):
        q[k] = (a[k] - sum(b[j] * q[k - j] for j in range(1, k + 1))) / b[0]
    return q


def tanh_anywhere(x, v):
    """tanh(x + s) = (T + tanh s) / (1 + T tanh s), with s = v t and T = tanh x."""
    s = np.array([tanh_at_zero(k) for k in range(K + 1)])[:, None] * v ** np.arange(K + 1)[:, None]
    T = np.tanh(x)
    one = np.zeros((K + 1,) + x.shape)
    one[0] = 1.0
    return series_divide(T * one + s, one + T * s)


def atan_series(x, v):
    """d^k/dx^k atan x = (-1)^{k-1} (k-1)! Im (i / (1 + i x))^k for k >= 1."""
    k = np.arange(1, K + 1)[:, None]
    out = (-1.0) ** (k - 1) * np.imag((1j / (1 + 1j * x)) ** k) * v**k / k
    return np.concatenate([np.arctan(x)[None], out])


CLOSED_FORMS = {
    "exp(x)": lambda x, v, k: np.exp(x) * v**k / math.factorial(k),
    "sin(x)": lambda x, v, k: np.sin(x + k * np.pi / 2) * v**k / math.factorial(k),
    "1/(1-x)": lambda x, v, k: v**k / (1 - x) ** (k + 1),
    "log1p(x)": lambda x, v, k: np.log1p(x) if k == 0 else (-1.0) ** (k + 1) * (v / (1 + x)) ** k / k,
    "sqrt(1+x)": lambda x, v, k: float(math.prod(Fraction(1, 2) - j for j in range(k)) / math.factorial(k))
    * (1 + x) ** (0.5 - k) * v**k,
}


@pytest.mark.parametrize("source", sorted(CLOSED_FORMS))
def test_closed_form_series(source):
    got = coefficients(source, X, V)
    want = np.array([CLOSED_FORMS[source](X, V, k) for k in range(K + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_atan_series():
    np.testing.assert_allclose(coefficients("atan(x)", X, V), atan_series(X, V), rtol=1e-12, atol=1e-13)


def test_tanh_series_by_bernoulli_numbers_and_the_addition_theorem():
    got = coefficients("tanh(x)", X, V)
    want = tanh_anywhere(X, V)
    np.testing.assert_allclose(got[:, 0], [tanh_at_zero(k) for k in range(K + 1)], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


def test_directional_derivatives_are_factorial_times_coefficients():
    """d^k/dt^k exp(x + t v) = v^k exp(x): the derivatives the taylor endpoint reports."""
    c = coefficients("exp(x)", X, V, order=8)
    k = np.arange(9)[:, None]
    factorials = np.array([math.factorial(i) for i in range(9)])[:, None]
    np.testing.assert_allclose(c * factorials, V**k * np.exp(X), rtol=1e-13)


def test_order_64_stays_accurate():
    """The contract's default limit: 1/(1-x) at x = 0.3 grows like (1/0.7)^k up to 1e10."""
    c = coefficients("1/(1-x)", np.array([0.3]), np.array([1.0]), order=64)[:, 0]
    np.testing.assert_allclose(c, 0.7 ** -(np.arange(65) + 1.0), rtol=1e-12)


# ---------------------------------------------------------------- identities on general curves

IDENTITIES = {  # program of x, and what it equals: "x" (the curve itself) or a constant
    "log(exp(x))": "x", "exp(log(x))": "x", "tan(atan(x))": "x", "sin(asin(x))": "x", "cos(acos(x))": "x",
    "tanh(atanh(x))": "x", "sinh(asinh(x))": "x", "cosh(acosh(x + 2)) - 2": "x", "log1p(expm1(x))": "x",
    "sqrt(x)**2": "x", "cbrt(x)**3": "x", "1/(1/x)": "x", "x**2.5 / x**1.5": "x", "log2(exp2(x))": "x",
    "log10(10**x)": "x", "exp(log(x) * 0.5) * sqrt(x) / x": 1.0, "sin(x)**2 + cos(x)**2": 1.0,
    "cosh(x)**2 - sinh(x)**2": 1.0, "sigmoid(x) + sigmoid(-x)": 1.0, "erf(x) + erfc(x)": 1.0,
    "softplus(x) - softplus(-x)": "x", "atan2(sin(x), cos(x))": "x", "hypot(x, 2 * x) / sqrt(5.0)": "x",
    "x * x / square(x)": 1.0, "reciprocal(x) * x": 1.0,
}


@pytest.mark.parametrize("source", sorted(IDENTITIES))
def test_identities_on_general_curves(source):
    rng = np.random.default_rng(7)
    x0 = rng.uniform(0.3, 0.7, 4)  # in every function's domain (asin, acos, atanh, log)
    series = rng.uniform(-0.3, 0.3, (K, 4)) / np.arange(1, K + 1)[:, None] ** 2
    fn = CompiledFunction(source, {"x": InputSpec((4,), "f8", "at")}, SETTINGS)
    g = fn.graph
    s = g.input("s", (K, 4), "f8", "extra")
    (ys,) = taylor(g, [fn.input_node("x")], [s], [fn.output])
    tape = compile_graph(g, [fn.input_node("x"), s], [fn.output, ys])
    y0, got = tape.run(x0, series)
    want = series if IDENTITIES[source] == "x" else np.zeros_like(series)
    np.testing.assert_allclose(y0, x0 if IDENTITIES[source] == "x" else IDENTITIES[source], rtol=1e-13)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- kinks: the jvp rules' conventions

KINKS = [  # program, point, direction: each at a point of non-differentiability
    ("abs(x)", [0.0, 0.0], [1.0, -1.0]),
    ("relu(x)", [0.0, 0.0], [1.0, -1.0]),
    ("maximum(x, 2 * x)", [0.0, 0.0], [1.0, -1.0]),
    ("minimum(x, 0.5 * x)", [0.0, 0.0], [1.0, -1.0]),
    ("max(x)", [1.0, 1.0], [0.5, -2.0]),
    ("min(x)", [1.0, 1.0], [0.5, -2.0]),
    ("where(x > 0, x, -x)", [0.0, 0.0], [1.0, -1.0]),
    ("hypot(x[0], x[1])", [0.0, 0.0], [1.0, 2.0]),
    ("norm(x)", [0.0, 0.0], [1.0, 2.0]),
    ("floor(x) + sign(x) + round(x)", [1.0, 0.0], [1.0, -1.0]),
]


@pytest.mark.parametrize("source,x,v", KINKS)
def test_kinks_follow_the_jvp_conventions(source, x, v):
    """At a kink the first coefficient is the jvp's one-sided value and, these functions being
    piecewise linear (or, like hypot and norm, 0 there by convention), the higher ones vanish."""
    x, v = np.array(x), np.array(v)
    fn = CompiledFunction(source, {"x": InputSpec(x.shape, "f8", "at")}, SETTINGS)
    _, c, _ = taylor_engine.coefficients(fn, {"x": x}, ["x"], {"x": v}, 4, SETTINGS)
    _, jv, _ = forward.jvp(fn, {"x": x}, ["x"], {"x": v})
    np.testing.assert_array_equal(c[1], np.reshape(jv, -1))
    np.testing.assert_array_equal(c[2:], 0.0)


@pytest.mark.parametrize("source", ["sqrt(x)", "cbrt(x)", "x**0.5", "x**2.5"])
def test_powers_at_zero_take_the_jvp_one_sided_derivative(source):
    """sqrt and cbrt at 0: +inf along v > 0, -inf along v < 0 (the jvp's convention); x^2.5: 0."""
    x, v = np.array([0.0, 0.0]), np.array([1.0, -1.0])
    fn = CompiledFunction(source, {"x": InputSpec((2,), "f8", "at")}, SETTINGS)
    _, c, _ = taylor_engine.coefficients(fn, {"x": x}, ["x"], {"x": v}, 1, SETTINGS)
    _, jv, _ = forward.jvp(fn, {"x": x}, ["x"], {"x": v})
    np.testing.assert_array_equal(c[1], jv)
    np.testing.assert_array_equal(c[1], [0.0, -0.0] if source == "x**2.5" else [np.inf, -np.inf])

