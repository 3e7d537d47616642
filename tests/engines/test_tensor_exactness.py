"""``/v1/derivatives`` returns exact tensors where they are exact: an entry that is 0 is 0.0 (not
±1e-16), 0.3 is 0.3; every other entry within the interpolation's rounding bound of the analytic
value (sympy differentiates the same expression, independently of derivd)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import sympy

NAMES = ("a", "b", "c")

CASES = [  # (program in both languages, point)
    ("a**2 * b + sin(b)", (0.3, 0.5)),
    ("a**3 * b**2 + a * c", (0.3, 0.5, 0.7)),
    ("exp(a) * b - a**4 + c**2 * a", (0.1, -1.3, 2.5)),
    ("a * b * c + cos(a + b)", (1.7, -0.4, 0.9)),
    ("log(1 + a**2) * b**3", (0.6, 1.1)),
]


def analytic(expr: str, point, order: int):
    """Each derivative tensor of orders 1..order at ``point``, by sympy (exact, then rounded once)."""
    symbols = sympy.symbols(NAMES[:len(point)])
    f = sympy.sympify(expr, locals=dict(zip(NAMES, symbols)))
    at = {s: sympy.Rational(repr(v)) for s, v in zip(symbols, point)}  # the decimal the request sends
    n, out = len(point), []
    for e in range(1, order + 1):
        t = np.zeros((n,) * e)
        for idx in itertools.product(range(n), repeat=e):
            t[idx] = float(sympy.diff(f, *[symbols[i] for i in idx]).evalf(40, subs=at))
        out.append(t)
    return out


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("expr,point", CASES)
def test_tensors_are_exact_where_the_analytic_tensor_is(client, expr, point, order):
    r = client.post("/v1/derivatives", json={"function": {"dsl": expr},
                                             "at": dict(zip(NAMES, point)), "order": order})
    assert r.status_code == 200, r.text
    got = [np.array(t, dtype=float) for t in r.json()["tensors"]]
    for e, (g, want) in enumerate(zip(got, analytic(expr, point, order)), start=1):
        assert g.shape == want.shape
        zeros = want == 0
        assert (g[zeros] == 0.0).all(), f"order {e}: {g[zeros]} where the tensor is exactly 0"
        # the documented bound: a few units in the last place of the largest directional coefficient
        scale = max(1.0, np.abs(want).max()) * order ** e
        bound = 4 * order * 2**-53 * scale * math.comb(len(point) + order, order)
        np.testing.assert_allclose(g, want, rtol=0, atol=bound)


def test_the_reported_case_gives_0_3_and_zeros(client):
    """x0² x1 + sin(x1) at (0.3, 0.5): ∂f/∂x0 = 2 x0 x1 = 0.3 was 0.29999999999999993, ∂³f/∂x0∂x1² = 0
    was 1.1e-16."""
    body = client.post("/v1/derivatives", json={"function": {"dsl": "x[0]**2 * x[1] + sin(x[1])"},
                                                "at": {"x": [0.3, 0.5]}, "order": 3}).json()
    g, h, t = (np.array(x) for x in body["tensors"])
    assert g[0] == 2 * 0.3 * 0.5 == 0.3
    assert t[0, 0, 0] == t[0, 1, 1] == t[1, 0, 1] == t[1, 1, 0] == 0.0
    assert t[1, 1, 1] == pytest.approx(-math.cos(0.5), rel=1e-15)
