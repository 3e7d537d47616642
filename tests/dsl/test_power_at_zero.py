"""``x ** 0`` is the constant 1, so every derivative is 0, also at x = 0 where the textbook
rule y·p·x^(p-1) reads 0 · inf: a literal exponent, ``pow(x, 0.0)``, and a constant input y = 0,
in forward and reverse mode, the Hessian (forward over reverse) and the Taylor series."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.transforms.taylor import taylor
from derivd.dsl import lower
from tests.dsl.support import SecondOrder, call, specs_of

PROGRAMS = [("x ** 0", {}), ("pow(x, 0.0)", {}), ("x ** y", {"y": 0.0}), ("x ** 0 + 3 * x", {})]
SLOPE = {"x ** 0 + 3 * x": 3.0}  # the gradient each program has at 0 (its x ** 0 contributes 0)


@pytest.mark.parametrize("dsl,constants", PROGRAMS, ids=[p[0] for p in PROGRAMS])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_gradient_at_zero(dsl, constants, mode):
    for x in (0.0, [0.0, 0.0]):
        program = dsl if np.ndim(x) == 0 else f"sum({dsl})"
        got = call("gradient", program, {"x": x}, constants, mode=mode)["gradient"]["x"]
        np.testing.assert_array_equal(got, np.full(np.shape(x), SLOPE.get(dsl, 0.0)))


@pytest.mark.parametrize("dsl,constants", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_hessian_at_zero(dsl, constants):
    value, gradient, hessian = SecondOrder(dsl, {"x": 0.0}, constants)({"x": 0.0})
    assert value == 1.0
    np.testing.assert_array_equal(gradient, [SLOPE.get(dsl, 0.0)])
    np.testing.assert_array_equal(hessian, [[0.0]])
    np.testing.assert_array_equal(call("hessian", dsl, {"x": 0.0}, constants)["hessian"], [[0.0]])


@pytest.mark.parametrize("dsl,constants", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_taylor_series_at_zero(dsl, constants):
    """Along x(t) = t: coefficients (1, slope, 0, 0, 0)."""
    program = lower(dsl, specs_of({"x": 0.0}, constants), Settings())
    g = program.graph
    x = g.inputs["x"]
    s = g.input("__s", (4,), "f8", "extra")
    (series,) = taylor(g, [x], [s], [program.output])
    if series is None:  # the transform saw a constant: no series at all
        assert SLOPE.get(dsl, 0.0) == 0.0
        return
    inputs = [g.inputs[name] for name in g.inputs if name != "__s"]
    values = {"x": 0.0, **constants}
    with np.errstate(all="ignore"):  # the power recurrence divides by x = 0 on the side not taken
        (got,) = compile_graph(g, inputs + [s], [series]).run(
            *[np.float64(values[n.params["name"]]) for n in inputs], np.array([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(got, [SLOPE.get(dsl, 0.0), 0.0, 0.0, 0.0])
