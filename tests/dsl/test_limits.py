"""Compile limits: each is checked before anything runs and refused with a 4xx naming the limit and
the value (CONTRACT §1, "Limits"); structural zeros come back as zeros."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from derivd.errors import DerivdError
from tests.dsl.support import call

SMALL = Service(Settings(max_source_bytes=2000, max_nesting_depth=20, max_loop_iterations=1000,
                         max_graph_nodes=5000, max_intermediate_bytes=80_000))
X = {"x": np.array([0.5, -1.0, 2.0])}


def refusal(dsl, service=SMALL, at=X) -> DerivdError:
    with pytest.raises(DerivdError) as e:
        service.compute("gradient", Request(function={"dsl": dsl}, at=at))
    assert 400 <= e.value.status < 500
    return e.value


@pytest.mark.parametrize("dsl,limit", [
    ("x[0] + " * 400 + "x[1]", "max_source_bytes"),
    ("(" * 30 + "x[0]" + ")" * 30, "max_nesting_depth"),
    ("-" * 30 + "x[0]", "max_nesting_depth"),
    ("x[0]" + " ** x[0]" * 30, "max_nesting_depth"),
    ("".join(f"def f{i}(a): return f{i - 1}(a) + 1\n" if i else "def f0(a): return a\n" for i in range(25))
     + "f24(x[0])", "max_nesting_depth"),
    ("s = x[0]\nfor i in range(30):\n    for j in range(40):\n        s = s * x[j % 3]\ns", "max_loop_iterations"),
    ("s = x[0]\nfor i in range(900):\n    s = s + sum(x[:i % 3 + 1]) * s\ns", "max_graph_nodes"),  # unrolled: i in a slice
    ("s = x[0]\nfor i in range(900):\n    s = sin(s) * cos(s) + exp(s) * log(s * s) + tanh(s)\ns", "max_graph_nodes"),
    ("sum(zeros((100, 101)) + x[0])", "max_intermediate_bytes"),
    ("sum(outer(x, ones(5000)))", "max_intermediate_bytes"),
    ("x[0] * 10 ** 10 ** 10", "int64"),
    ("x[0] * 10.0 ** 400", "float64"),
    ("x[0] * " + "9" * 30, "int64"),
])
def test_each_limit_is_a_4xx_naming_it_and_the_value(dsl, limit):
    e = refusal(dsl)
    assert e.code == "limit_exceeded" and e.detail["limit"] == limit, (e.code, e.detail, e.message)
    assert limit in e.message
    if limit not in ("int64", "float64"):
        assert e.detail["value"] > e.detail["max"]


def test_default_limits_admit_the_contract_minimums():
    """Defaults admit 64 KiB of text and 50,000 loop iterations; they refuse nesting deeper than 200."""
    text = "s = x[0]\n" + "s = s + 1\n" * 6000 + "s"  # ~64 KiB
    assert len(text.encode()) >= 60_000
    assert call("gradient", text, X)["value"] == pytest.approx(6000.5)
    looped = "s = x[0]\nfor i in range(50000):\n    s = s + 0.00001 * x[i % 3]\ns"
    assert call("gradient", looped, X)["value"] == pytest.approx(0.5 + 0.00001 * (50000 // 3 * 1.5 + 0.5 - 1.0))
    deep = "(" * 201 + "x[0]" + ")" * 201
    with pytest.raises(DerivdError) as e:
        call("gradient", deep, X)
    assert e.value.detail["limit"] == "max_nesting_depth"


def test_structural_zeros_are_zeros_not_null():
    r = call("gradient", "sum(x * 2)", {"x": [1.0, 2.0], "y": [[3.0, 4.0]]})
    assert np.array_equal(r["gradient"]["y"], np.zeros((1, 2))) and r["gradient"]["y"].dtype == np.float64
    r = call("jacobian", "[x[0], 3.0]", {"x": [1.0, 2.0], "y": 5.0}, mode="reverse")
    assert np.array_equal(r["jacobian"], [[1, 0, 0], [0, 0, 0]])
    r = call("jvp", "5.0 + 0 * len(x)", {"x": [1.0]}, v={"x": [1.0]})
    assert np.array_equal(r["jvp"], [0.0])
