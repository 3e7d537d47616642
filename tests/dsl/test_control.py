"""Structure of programs: constants, helpers, conditionals and masks, loops; each against a numpy
twin of the same program, derivatives against its finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.errors import DerivdError
from tests.dsl.support import call, check_against_numpy

X = np.array([0.5, -1.2, 2.0, 0.7])


def refused(dsl, at=None, constants=None, endpoint="evaluate", **fields) -> DerivdError:
    with pytest.raises(DerivdError) as e:
        call(endpoint, dsl, at if at is not None else {"x": X}, constants, **fields)
    body = e.value.to_body()["error"]
    assert 400 <= e.value.status < 500 and body["code"] and body["message"]
    return e.value


# ---------------------------------------------------------------- constants


def test_constants_are_bound_and_never_differentiated():
    a = np.array([2, -1, 3, 1])  # an integer array
    w = np.array([0.5, 0.25, 2.0, 1.0])
    check_against_numpy("sum(a * x ** 2 + w) / len(a)", lambda x, a, w: np.sum(a * x**2 + w) / 4, {"x": X},
                        {"a": a, "w": w})
    r = call("gradient", "sum(a * x)", {"x": X}, {"a": a})
    assert list(r["gradient"]) == ["x"] and np.array_equal(r["gradient"]["x"], a)
    r = call("jacobian", "[x * k, k]", {"x": X[:2]}, {"k": 3})  # an integer scalar constant
    assert np.array_equal(r["jacobian"], [[3, 0], [0, 3], [0, 0]])


def test_wrt_naming_a_constant_or_an_unknown_input_is_4xx():
    e = refused("sum(a * x)", constants={"a": np.array([1, 2, 3, 4])}, endpoint="gradient", wrt=["a"])
    assert "constant" in e.message and e.detail.get("name") == "a"
    e = refused("sum(x)", endpoint="gradient", wrt=["y"])
    assert "y" in e.message
    e = refused("sum(x) + y")
    assert e.code == "unknown_name" and e.detail["name"] == "y"


def test_an_input_given_in_both_at_and_constants_is_4xx():
    refused("sum(x)", constants={"x": np.array([1, 2, 3, 4])})


# ---------------------------------------------------------------- helpers


def test_helpers_including_one_calling_an_earlier_one():
    dsl = """
def sq(a): return a * a
def norm2(a, b): return sqrt(sq(a) + sq(b))
def scaled(a): return norm2(a, x[0]) * k
r = scaled(x[1])
[r, norm2(x[2], x[3]), sq(r)]
"""

    def f(x, k):
        r = np.sqrt(x[1] ** 2 + x[0] ** 2) * k
        return np.array([r, np.sqrt(x[2] ** 2 + x[3] ** 2), r * r])

    check_against_numpy(dsl, f, {"x": X, "k": 1.5})


def test_a_helper_sees_inputs_and_its_parameters_but_not_the_callers_temporaries():
    check_against_numpy("def f(a): return a * x[0]\ny = 2\nf(y) + f(x[1])", lambda x: 2 * x[0] + x[1] * x[0],
                        {"x": X})
    e = refused("def f(a): return a * t\nt = 2\nf(x[0])")
    assert e.code == "unknown_name" and "'t'" in e.message


@pytest.mark.parametrize("dsl", [
    "def f(a): return f(a)\nf(x[0])",
    "def f(a): return g(a)\ndef g(a): return f(a)\ng(x[0])",
    "def f(a): return g(a)\ndef g(a): return a\nf(x[0])",  # a later helper is not visible either
])
def test_recursion_is_refused_by_name(dsl):
    e = refused(dsl)
    assert e.code == "recursion" and "recursion" in e.message and "line" in e.detail


def test_helper_arity_and_shadowing_are_4xx():
    refused("def f(a, b): return a\nf(x)")
    refused("def sin(a): return a\nsin(x)")
    refused("def f(a): return a\nf")


# ---------------------------------------------------------------- conditionals and masks


def test_if_else_expressions_and_where_with_masks():
    check_against_numpy("where(x > 0, x ** 2, -x)", lambda x: np.where(x > 0, x**2, -x), {"x": X})
    check_against_numpy("x ** 2 if x > 0 else -x", lambda x: np.where(x > 0, x**2, -x), {"x": X})
    check_against_numpy("x[0] * 3 if x[1] < x[2] else x[3]", lambda x: x[0] * 3, {"x": X})
    check_against_numpy("x * 2 if len(x) == 4 else x", lambda x: 2 * x, {"x": X})  # a static condition
    check_against_numpy("where((x > 0) & (x < 1.5) | ~(x > -1), x, 0.5 * x)",
                        lambda x: np.where(((x > 0) & (x < 1.5)) | ~(x > -1), x, 0.5 * x), {"x": X})
    check_against_numpy("where(-1 < x < 1, sin(x), x)", lambda x: np.where((-1 < x) & (x < 1), np.sin(x), x),
                        {"x": X})
    check_against_numpy("where(x > 0 and x < 1, x, 1)", lambda x: np.where((x > 0) & (x < 1), x, 1), {"x": X})
    check_against_numpy("sum((x > 0) * x) + sum(x >= 0.6)", lambda x: np.sum((x > 0) * x) + np.sum(x >= 0.6),
                        {"x": X})
    check_against_numpy("where(m, x, -x)", lambda x, m: np.where(m, x, -x), {"x": X},
                        {"m": np.array([True, False, False, True])})


def test_masks_refuse_arithmetic_operators_on_floats():
    e = refused("x & (x > 0)")
    assert "mask" in e.message
    refused("~x")


# ---------------------------------------------------------------- loops


def test_loops_with_loop_carried_names_and_nested_loops():
    dsl = """
h = x[0]
acc = 0.0
for t in range(3):
    h = tanh(h * w[t] + x[t + 1])
    for j in range(t + 1):
        acc = acc + h * x[j] * (j + 1)
    acc += t * h
[h, acc]
"""

    def f(x, w):
        h, acc = x[0], 0.0
        for t in range(3):
            h = np.tanh(h * w[t] + x[t + 1])
            for j in range(t + 1):
                acc = acc + h * x[j] * (j + 1)
            acc += t * h
        return np.array([h, acc])

    check_against_numpy(dsl, f, {"x": X, "w": np.array([0.3, -0.8, 1.1])})


def test_loops_over_every_range_form_and_tuple_assignment():
    dsl = """
a, b = x[0], x[1]
for i in range(2, 9, 3):
    a, b = b, a * b + i
for i in range(3, 0, -1):
    a = a + x[i] / i
for i in range(0):
    a = a * 100
return [a, b]
"""

    def f(x):
        a, b = x[0], x[1]
        for i in range(2, 9, 3):
            a, b = b, a * b + i
        for i in range(3, 0, -1):
            a = a + x[i] / i
        return np.array([a, b])

    check_against_numpy(dsl, f, {"x": X})


def test_a_loop_builds_an_array_with_concat():
    dsl = "ys = x[0:1]\nfor i in range(1, 4):\n    ys = concat([ys, ys[-1:] * x[i]])\nys"
    check_against_numpy(dsl, lambda x: np.cumprod(x), {"x": X})


@pytest.mark.parametrize("dsl", [
    "for i in range(n):\n    x = x * 2\nx",  # n is an array: bounds must be static
    "while True:\n    x = x\nx",
    "for i in x:\n    y = i\nx",
    "for i in range(1, 2, 0):\n    y = i\nx",
])
def test_loop_forms_outside_the_language_are_refused(dsl):
    e = refused(dsl, {"x": X, "n": 3.0})
    assert e.detail.get("line") is not None or "range" in e.message or "static" in e.message


def test_loop_iteration_limit_is_a_4xx_naming_the_limit():
    e = refused("s = x\nfor i in range(1000):\n    for j in range(1000):\n        s = s + 1\ns")
    assert e.code == "limit_exceeded" and e.detail["limit"] == "max_loop_iterations"
    assert e.detail["value"] > e.detail["max"]
