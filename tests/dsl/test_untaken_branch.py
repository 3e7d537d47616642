"""No NaN through the side a selection did not take: `where(c, a, b)` and `a if c else b`
evaluate both sides, and an inf or NaN on the untaken side (sqrt' at 0, sin(x)/x at 0, log of a
negative) must not reach a derivative that is finite. Forward (unbatched jvp and batched
Jacobian), reverse, and second order (jvp of vjp), each against the analytic derivatives of the
taken side."""

from __future__ import annotations

import numpy as np
import pytest

from tests.dsl.support import call, second_order

# (program, point, value, gradient, Hessian): the reference is the taken side's calculus
SCALAR_CASES = [
    ("where(x > 0, sqrt(x), 0)", 0.0, 0.0, 0.0, 0.0),
    ("where(x > 0, sqrt(x), 0)", 4.0, 2.0, 0.25, -1 / 32),
    ("where(x != 0, sin(x) / x, 1)", 0.0, 1.0, 0.0, 0.0),
    ("where(x != 0, sin(x) / x, 1)", 0.5, np.sin(0.5) / 0.5, (0.5 * np.cos(0.5) - np.sin(0.5)) / 0.25,
     -np.sin(0.5) / 0.5 - 2 * np.cos(0.5) / 0.25 + 2 * np.sin(0.5) / 0.125),
    ("sqrt(x) if x > 0 else 0", 0.0, 0.0, 0.0, 0.0),
    ("sqrt(x) if x > 0 else 0 * x", -1.0, 0.0, 0.0, 0.0),  # sqrt(-1) is NaN, untaken
    ("x * x if x > 0 else 0", 0.0, 0.0, 0.0, 0.0),
    ("where(x > 0, log(x), x)", -1.0, -1.0, 1.0, 0.0),  # log(-1) is NaN, untaken
    ("where(x <= 1, x, 1 / (x - 1))", 1.0, 1.0, 1.0, 0.0),  # 1/0 = inf and its slope -inf, untaken
    ("where(x >= 1, 1 / (x - 1), x * x)", 1.0 - 2**-52, (1 - 2**-52) ** 2, 2 * (1 - 2**-52), 2.0),
    ("where(x > 0, where(x > 1, log(x - 1), sqrt(x)), 0)", 1.0, 1.0, 0.5, -0.25),
    ("where(x > 0, x ** 1.5, 0) * 2", 0.0, 0.0, 0.0, 0.0),
    ("where(x > 0, exp(-1 / x), 0)", 0.0, 0.0, 0.0, 0.0),  # -1/0 = -inf, exp(-inf) = 0: finite side, inf slope
    ("where(abs(x) > 1e-8, (1 - cos(x)) / x ** 2, 0.5 - x ** 2 / 24)", 0.0, 0.5, 0.0, -1 / 12),
    ("def safe_log(a): return where(a > 0, log(a), -1e300)\nsafe_log(x) + safe_log(-x)", 2.0, np.log(2) - 1e300,
     0.5, -0.25),
    ("where(x > 0, acosh(x + 1), 0) + where(x < 0, asin(x), 0)", 0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("dsl,x,value,grad,hess", SCALAR_CASES, ids=[f"{c[0][:40]}@{c[1]}" for c in SCALAR_CASES])
def test_scalar_selection_forward_reverse_and_second_order(dsl, x, value, grad, hess):
    r = call("gradient", dsl, {"x": x})
    assert r["value"] == pytest.approx(value, rel=1e-14, abs=1e-300)
    assert r["gradient"]["x"] == pytest.approx(grad, rel=1e-12, abs=1e-300), "reverse"
    r = call("jvp", dsl, {"x": x}, v={"x": 1.0})
    assert float(np.reshape(r["jvp"], -1)[0]) == pytest.approx(grad, rel=1e-12, abs=1e-300), "forward"
    r = call("jacobian", dsl, {"x": x}, mode="forward")
    assert float(np.reshape(r["jacobian"], -1)[0]) == pytest.approx(grad, rel=1e-12, abs=1e-300), "batched forward"
    v, g, h = second_order(dsl, {"x": x})
    assert (g[0], h[0, 0]) == (pytest.approx(grad, rel=1e-12, abs=1e-300), pytest.approx(hess, rel=1e-10, abs=1e-300))


def test_array_selections_with_nan_and_inf_on_the_untaken_side():
    x = np.array([0.0, 4.0, -1.0, 0.25])
    dsl = "sum(where(x > 0, sqrt(x), 0) + where(x != 0, sin(x) / x, 1) + where(x > 0, log(x), 0))"
    taken = x > 0
    grad = (np.where(taken, 0.5 / np.sqrt(np.where(taken, x, 1)), 0)
            + np.where(x != 0, (x * np.cos(x) - np.sin(x)) / np.where(x != 0, x, 1) ** 2, 0)
            + np.where(taken, 1 / np.where(taken, x, 1), 0))
    r = call("gradient", dsl, {"x": x})
    np.testing.assert_allclose(r["gradient"]["x"], grad, rtol=1e-13)
    for mode in ("forward", "reverse"):
        j = call("jacobian", dsl, {"x": x}, mode=mode)["jacobian"]
        np.testing.assert_allclose(np.reshape(j, -1), grad, rtol=1e-13, err_msg=mode)
    _, g, h = second_order(dsl, {"x": x})
    assert np.all(np.isfinite(h)) and np.allclose(h, np.diag(np.diag(h)))
    s = np.where(x != 0, x, 1)
    d2 = (np.where(taken, -0.25 * np.where(taken, x, 1) ** -1.5, 0)
          + np.where(x != 0, -np.sin(s) / s - 2 * np.cos(s) / s**2 + 2 * np.sin(s) / s**3, 0)  # the constant side
          + np.where(taken, -1 / np.where(taken, x, 1) ** 2, 0))
    np.testing.assert_allclose(np.diag(h), d2, rtol=1e-10)


def test_selection_feeding_a_reduction_a_matmul_and_a_loop():
    """The untaken side's NaN must not leak when the masked cotangent later meets other
    operations (products, reductions, matmul, loop-carried values)."""
    x = np.array([0.0, 1.0, -2.0])
    dsl = """
y = where(x > 0, sqrt(x), 0)
for i in range(3):
    y = y * 2 + where(x > -1, log(x + 1), 0)
sum(y @ A) + prod(y + 1)
"""
    a = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])
    r = call("gradient", dsl, {"x": x, "A": a})
    assert np.all(np.isfinite(r["gradient"]["x"])) and np.all(np.isfinite(r["gradient"]["A"]))
    v, g, h = second_order(dsl, {"x": x, "A": a})
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    # entry 2 (x = -2) takes only the zero sides: it must have no derivative at all
    assert g[2] == 0 and np.all(h[2] == 0) and np.all(h[:, 2] == 0)
