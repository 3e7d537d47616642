"""Taylor coefficients of random compositions against nested forward mode, to order 4.

Hypothesis draws programs from a grammar of the language's functions (each
wrapped so its argument stays in its domain: log(1 + e²), asin(0.9 tanh e), ...),
a point and a direction; the taylor transform's c_1..c_4 along v must equal
D^k f[v, ..., v] / k! from the jvp transform applied k times. Inner nodes get
full (nonlinear) series, so every recurrence sees general input, not a line.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.dsl import InputSpec
from derivd.engines.function import CompiledFunction
from derivd.transforms import vjp
from derivd.transforms.taylor import taylor
from tests.transforms.test_taylor_registry import nested_jvp_coefficients

ORDER = 4
SETTINGS = Settings()

UNARY = [  # e is the argument's text
    "sin({e})", "cos({e})", "tanh({e})", "atan({e})", "sigmoid({e})", "softplus({e})", "erf({e})",
    "exp(tanh({e}))", "log(1 + ({e})**2)", "sqrt(1 + ({e})**2)", "1 / (1 + ({e})**2)", "log1p(({e})**2)",
    "asin(0.9 * tanh({e}))", "acos(0.9 * tanh({e}))", "atanh(0.9 * tanh({e}))", "acosh(2 + ({e})**2)",
    "asinh({e})", "cbrt(2 + ({e})**2)", "(1.5 + tanh({e}))**2.5", "({e})**3", "square({e})",
    "sinh(tanh({e}))", "cosh(tanh({e}))", "tan(tanh({e}))", "expm1(tanh({e}))", "exp2(tanh({e}))",
    "log2(2 + ({e})**2)", "log10(2 + ({e})**2)", "erfc({e})", "reciprocal(2 + sin({e}))",
]
BINARY = [
    "({a}) + ({b})", "({a}) - ({b})", "({a}) * ({b})", "({a}) / (1.5 + sin({b}))", "atan2({a}, 2 + ({b})**2)",
    "hypot({a}, 1 + ({b})**2)", "(2 + ({a})**2) ** tanh({b})",
]
REDUCE = ["sum({e})", "prod(1 + 0.5 * tanh({e}))", "logsumexp({e})", "norm(1 + ({e})**2)", "mean({e}) * ({e})",
          "softmax({e})", "cumulative({e})"]
LEAVES = ["x", "y", "x[0]", "x[::-1]", "0.5 * x + y"]


def expressions():
    def extend(inner):
        return st.one_of(
            st.tuples(st.sampled_from(UNARY), inner).map(lambda t: t[0].format(e=t[1])),
            st.tuples(st.sampled_from(BINARY), inner, inner).map(lambda t: t[0].format(a=t[1], b=t[2])),
        )

    return st.recursive(st.sampled_from(LEAVES), extend, max_leaves=6)


def programs():
    def wrap(e, r):
        e = f"x * ({e})"  # a vector, whatever the expression's shape
        if r == "cumulative({e})":  # a reduction fed back elementwise
            return f"x * sum({e})"
        return r.format(e=e)

    return st.one_of(expressions(), st.tuples(expressions(), st.sampled_from(REDUCE)).map(lambda t: wrap(*t)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs(), data=st.data())
def test_random_compositions_match_nested_jvp(program, data):
    shapes = {"x": (3,), "y": ()}
    fn = CompiledFunction(program, {n: InputSpec(s, "f8", "at") for n, s in shapes.items()}, SETTINGS)
    g = fn.graph
    names = [n for n in shapes if n in g.inputs]
    wrt = [fn.input_node(n) for n in names]
    seeds = [g.input(f"__s_{n}", (ORDER,) + shapes[n], "f8", "extra") for n in names]
    dirs = [g.input(f"__v_{n}", shapes[n], "f8", "extra") for n in names]
    (ys,) = taylor(g, wrt, seeds, [fn.output])
    reference = nested_jvp_coefficients(g, wrt, fn.output, dirs, ORDER)
    assert len(reference) == ORDER + 1
    tape = compile_graph(g, wrt + seeds + dirs, [ys if ys is not None else fn.output] + reference[1:])

    floats = st.floats(-1.0, 1.0, allow_nan=False)
    point = [np.array(data.draw(st.lists(floats, min_size=3, max_size=3))) if n == "x" else
             np.array(data.draw(floats)) for n in names]
    v = [np.array(data.draw(st.lists(floats, min_size=3, max_size=3))) if n == "x" else
         np.array(data.draw(floats)) for n in names]
    series = [np.concatenate([vi[None], np.zeros((ORDER - 1,) + vi.shape)]) for vi in v]
    with np.errstate(all="ignore"):
        got, *want = tape.run(*point, *series, *v)
    for k in range(1, ORDER + 1):
        w = np.asarray(want[k - 1])
        g_k = np.asarray(got)[k - 1] if ys is not None else np.zeros_like(w)
        scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
        np.testing.assert_allclose(g_k, w, rtol=1e-8, atol=1e-9 * scale, err_msg=f"{program}: coefficient {k}")


@pytest.mark.parametrize("program", [
    "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)",
    "sum(where(x > 0, sqrt(abs(x) + 1), exp(x)) * maximum(x, 0.2 * x)) + logsumexp(x * x[::-1])",
    "norm(sin(x)) * prod(x + 2) + sum(softmax(x) * x)",
])
def test_taylor_of_a_gradient_program(program):
    """Transforms compose: the series of the vjp graph along v is H v, then higher derivatives of the
    gradient; mul0, index_add and masked where-cotangents of reverse mode all need their Taylor rules."""
    n = 4
    fn = CompiledFunction(program, {"x": InputSpec((n,), "f8", "at")}, SETTINGS)
    g, x = fn.graph, fn.input_node("x")
    (grad,) = vjp(g, [x], [fn.output], [g.const(1.0)])
    seeds = g.input("__s", (ORDER, n), "f8", "extra")
    direction = g.input("__v", (n,), "f8", "extra")
    (series,) = taylor(g, [x], [seeds], [grad])
    reference = nested_jvp_coefficients(g, [x], grad, [direction], ORDER)
    assert len(reference) == ORDER + 1
    tape = compile_graph(g, [x, seeds, direction], [series] + reference[1:])
    rng = np.random.default_rng(3)
    x0, v = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    got, *want = tape.run(x0, np.concatenate([v[None], np.zeros((ORDER - 1, n))]), v)
    for k in range(ORDER):
        scale = max(1.0, float(np.max(np.abs(want[k]))))
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-10 * scale, err_msg=f"coefficient {k + 1}")
