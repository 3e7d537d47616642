"""Points of non-differentiability: the documented one-sided conventions (docs/language.md,
"Non-differentiable points"), the same in forward and reverse mode, never NaN."""

from __future__ import annotations

import numpy as np
import pytest

from tests.dsl.support import call

INF = float("inf")

# (program, inputs, the convention's gradient per input)
CONVENTIONS = [
    ("abs(x)", {"x": 0.0}, {"x": 0.0}),
    ("relu(x)", {"x": 0.0}, {"x": 0.0}),
    ("sign(x)", {"x": 0.0}, {"x": 0.0}),
    ("sign(x)", {"x": -2.5}, {"x": 0.0}),
    ("sqrt(x)", {"x": 0.0}, {"x": INF}),  # one-sided: the right derivative
    ("cbrt(x)", {"x": 0.0}, {"x": INF}),
    ("x ** 0.5", {"x": 0.0}, {"x": INF}),
    ("floor(x) + ceil(x) + round(x)", {"x": 2.0}, {"x": 0.0}),
    ("floor(x) + ceil(x) + round(x)", {"x": 0.5}, {"x": 0.0}),
    ("floor(x) + ceil(x) + round(x)", {"x": -1.3}, {"x": 0.0}),
    ("x // y", {"x": 3.0, "y": 1.5}, {"x": 0.0, "y": 0.0}),
    ("x % y", {"x": 3.5, "y": 1.5}, {"x": 1.0, "y": -2.0}),
    ("x % y", {"x": 3.0, "y": 1.5}, {"x": 1.0, "y": -2.0}),  # at the jump: the floor's side
    ("max(x)", {"x": [1.0, 3.0, 3.0, 2.0]}, {"x": [0.0, 0.5, 0.5, 0.0]}),
    ("min(x)", {"x": [1.0, 1.0, 1.0, 2.0]}, {"x": [1 / 3, 1 / 3, 1 / 3, 0.0]}),
    ("max(x, axis=1)[0]", {"x": [[2.0, 2.0], [1.0, 0.0]]}, {"x": [[0.5, 0.5], [0.0, 0.0]]}),
    ("maximum(x, y)", {"x": 1.0, "y": 1.0}, {"x": 0.5, "y": 0.5}),
    ("minimum(x, y)", {"x": -2.0, "y": -2.0}, {"x": 0.5, "y": 0.5}),
    ("max(x, y)", {"x": 1.0, "y": 1.0}, {"x": 0.5, "y": 0.5}),
    ("clip(x, lo, hi)", {"x": 1.0, "lo": 1.0, "hi": 2.0}, {"x": 1.0, "lo": 0.0, "hi": 0.0}),
    ("clip(x, lo, hi)", {"x": 2.0, "lo": 1.0, "hi": 2.0}, {"x": 1.0, "lo": 0.0, "hi": 0.0}),
    ("clip(x, lo, hi)", {"x": 0.5, "lo": 1.0, "hi": 2.0}, {"x": 0.0, "lo": 1.0, "hi": 0.0}),
    ("clip(x, lo, hi)", {"x": 2.5, "lo": 1.0, "hi": 2.0}, {"x": 0.0, "lo": 0.0, "hi": 1.0}),
    ("norm(x)", {"x": [0.0, 0.0]}, {"x": [0.0, 0.0]}),
    ("norm(x, axis=0)[1]", {"x": [[3.0, 0.0], [4.0, 0.0]]}, {"x": [[0.0, 0.0], [0.0, 0.0]]}),
    ("hypot(x, y)", {"x": 0.0, "y": 0.0}, {"x": 0.0, "y": 0.0}),
    ("pow(x, y)", {"x": 0.0, "y": 2.5}, {"x": 0.0, "y": 0.0}),
    ("x ** y", {"x": 0.0, "y": 2.0}, {"x": 0.0, "y": 0.0}),
    ("prod(x)", {"x": [0.0, 2.0, 3.0]}, {"x": [6.0, 0.0, 0.0]}),
    ("prod(x)", {"x": [0.0, 2.0, 0.0]}, {"x": [0.0, 0.0, 0.0]}),
    ("x if x > 0 else 0", {"x": 0.0}, {"x": 0.0}),
    ("x if x >= 0 else 0", {"x": 0.0}, {"x": 1.0}),
]


@pytest.mark.parametrize("dsl,at,grad", CONVENTIONS, ids=[f"{c[0]}@{list(c[1].values())}" for c in CONVENTIONS])
def test_convention_in_forward_and_reverse(dsl, at, grad):
    want = np.concatenate([np.reshape(np.asarray(grad[k], dtype=float), -1) for k in at])
    r = call("gradient", dsl, at)
    got = np.concatenate([np.reshape(r["gradient"][k], -1) for k in at])
    np.testing.assert_array_equal(got, want, err_msg="reverse")
    for mode in ("forward", "reverse"):
        j = np.reshape(call("jacobian", dsl, at, mode=mode)["jacobian"], -1)
        np.testing.assert_array_equal(j, want, err_msg=mode)


def test_kinks_never_give_nan_in_second_order():
    from tests.dsl.support import second_order

    for dsl, at, _ in CONVENTIONS:
        if "sqrt" in dsl or "cbrt" in dsl or "0.5" in dsl:
            continue  # +inf slopes have a -inf second derivative, not a NaN one; checked below
        _, g, h = second_order(dsl, at)
        assert not np.any(np.isnan(g)) and not np.any(np.isnan(h)), dsl
    _, g, h = second_order("sqrt(x)", {"x": 0.0})
    assert g[0] == INF and h[0, 0] == -INF
