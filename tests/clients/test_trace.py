"""``trace``: Python functions written with the SDK's operations become DSL text that round-trips.

Each function below is traced, sent to the live server, and its value and
derivatives compared with the same Python function run on numpy (the ``dd``
operations compute with numpy when given arrays), differentiated by the
eighth-order central difference of tests/references.py. A random-expression
property test checks the written precedence: the DSL text, read back as Python, computes what the
traced function computed.
"""

from __future__ import annotations

import math
from math import sqrt

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.clients.conftest import dd
from tests.references import fd_jacobian
from tests.support import python_ast

RNG = np.random.default_rng(7)
W = RNG.normal(size=(3, 4))
IDX = np.array([2, 0, 3, 3])


def polar(r, theta):
    return [r * dd.cos(theta), r * dd.sin(theta)]


def rosenbrock(x):
    return dd.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def shared_subexpression(x):
    s = dd.exp(-x) + 1
    return s * s / dd.sum(s)


def masked(x):
    return dd.where((x > 0) & (x < 1.5), dd.sqrt(x + 1), -x ** 2 / 2)


def closure_matrix(x):
    return dd.tanh(W @ x) - x[:3] * 0.5


def numpy_spelling(x):
    return np.sum(np.sin(x) ** 2 + np.exp(-x), axis=0) * np.log1p(x @ x)


def axes_and_transpose(A):
    return dd.sum(A.T * A.T[:, ::-1], axis=1) + dd.sum(dd.mean(A, axis=0)[:2])


def gather_and_index_arithmetic(x):
    return x[IDX] * x[-1] + dd.sum(x[1:3])


def python_loop(x):
    acc = x[0]
    for i in range(1, len(x)):
        acc = acc * dd.cos(x[i]) + x[i - 1]
    return acc


def reductions(x):
    return [dd.logsumexp(x), dd.norm(x), dd.max(x * x), dd.prod(x[:3]), dd.softmax(x)[1]]


def linalg(A, b):
    M = A @ A.T + 3 * dd.eye(3)
    return dd.sum(dd.solve(M, b)) + dd.slogdet(M)[1] + dd.sum(dd.inv(M)[0])


def reshape_stack_concat(x):
    m = dd.reshape(x, (2, 3))
    return dd.concat([dd.stack([m[0], m[1] ** 2], axis=1).T, m], axis=0) * dd.sigmoid(x[0])


def elementwise_zoo(x):
    return (dd.atan2(x, 2.0) + dd.hypot(x, 1.0) + dd.softplus(x) + dd.relu(x - 0.2) + dd.cbrt(x + 3)
            + dd.erf(x) + dd.maximum(x, 0.1) + dd.clip(x, -0.5, 0.5) + dd.square(x) + dd.expm1(x) * dd.exp2(x))


def scans(A):
    """dd.cumsum, numpy's np.cumsum on a traced array (flattened: axis None) and the method."""
    return dd.cumsum(A, axis=1)[:, -1] * dd.sum(np.cumsum(A) ** 2) + A.cumsum(0)[-1] ** 2 + dd.cumsum(A, -2)[0]


def methods_and_attributes(A):
    """numpy's array methods on traced values, with numpy's arguments (positional axes too)."""
    return (A.sum() * A.mean(1) + A.max(0)[:3] * A.min(axis=1) + A.prod(1) + A.reshape(4, 3)[:3, 0]
            + A.T.dot(A)[0, :3] + A.clip(-0.5, 0.5).sum(0)[1:] + A.ravel()[:3] + A.flatten()[3:6]
            + A.transpose()[0, :3] + A.swapaxes(0, 1)[1, :3] + (A > 0).astype(float)[:, 0] * A.size
            + A[:, :1].squeeze() * A.ndim + A.round()[0, :3] + A.cumsum(1)[:, -1] + A.shape[0])


def new_axes_and_ellipsis(x, A):
    return dd.sum(x[:, None] * x[None, :] + A[..., 1][:, None, np.newaxis]) + A[None, ..., 2][0]


def advanced_indexing(A):
    return A[[0, 2], [1, 3]] + A[2, 1:3] + A[[True, False, True], 0] + dd.sum(A[:, [3, 0, 0]], axis=0)[:2]


def scipy_special_ufuncs(x):
    import scipy.special
    return dd.sum(scipy.special.expit(x) * scipy.special.erf(x)) + np.sum(np.arctan2(x, 2.0) + np.absolute(x))


def layout(x, A):
    """numpy's shape functions on traced values, as dd.* and as numpy's own."""
    return (dd.sum(np.roll(x, 1) * dd.flip(x)) + dd.sum(np.pad(A, 1, mode="reflect") ** 2)
            + dd.sum(dd.tril(A, -1) * np.triu(A)) + dd.sum(dd.split(x, 2)[1]) + dd.sum(np.diagonal(A, 1))
            + dd.sum(dd.tile(x, 2)[:5] * dd.repeat(x, 2)[:5]) + dd.sum(np.moveaxis(dd.expand_dims(A, 0), 0, -1))
            + dd.sum(dd.take_along_axis(A, np.argsort(W[:3], axis=1), 1)[:, 0]) + dd.sum(dd.rot90(A)[0])
            + dd.sum(dd.linspace(x[0], x[1], 3)) + dd.sum(np.hstack([x, x ** 2])) + dd.sum(dd.take(A, [0, 5]))
            + np.trace(A, 1) * dd.trace(A) + dd.sum(np.diag(x, -1) ** 2) + dd.sum(dd.diag(A, 1))
            + dd.sum(np.clip(x, None, 0.3) + dd.clip(x, a_min=-0.2)))


def _math_module():
    cos = math.cos  # reached through a closure cell

    def math_module(r, theta):
        """math's functions on traced scalars: the module, a function imported from it, one closed over."""
        return [math.sin(theta) * math.exp(r) + math.log(r, 2) + math.hypot(r, theta) + math.pi,
                math.fabs(theta) * math.atan2(r, theta) + sqrt(r) + cos(theta)]

    return math_module


math_module = _math_module()


CASES = [
    (math_module, {"r": np.array(1.7), "theta": np.array(0.4)}),
    (polar, {"r": np.array(1.7), "theta": np.array(0.4)}),
    (rosenbrock, {"x": np.array([1.2, 0.5, -0.3, 0.8])}),
    (shared_subexpression, {"x": np.array([0.2, -0.4, 1.1])}),
    (masked, {"x": np.array([-0.7, 0.3, 1.2, 2.0])}),
    (closure_matrix, {"x": np.array([0.3, -0.2, 0.9, 0.5])}),
    (numpy_spelling, {"x": np.array([0.3, 0.7, -0.4])}),
    (axes_and_transpose, {"A": RNG.normal(size=(3, 4))}),
    (gather_and_index_arithmetic, {"x": np.array([0.5, -1.0, 2.0, 0.25])}),
    (python_loop, {"x": np.array([0.5, -1.0, 2.0, 0.25])}),
    (reductions, {"x": np.array([0.5, -1.0, 2.0, 0.25])}),
    (linalg, {"A": RNG.normal(size=(3, 3)), "b": np.array([1.0, -2.0, 0.5])}),
    (reshape_stack_concat, {"x": np.array([0.5, -1.0, 2.0, 0.25, 1.5, -0.3])}),
    (elementwise_zoo, {"x": np.array([0.35, -0.8, 1.3])}),
    (scans, {"A": RNG.normal(size=(3, 3))}),
    (methods_and_attributes, {"A": RNG.normal(size=(3, 4))}),
    (new_axes_and_ellipsis, {"x": np.array([0.5, -1.0, 2.0]), "A": RNG.normal(size=(3, 4))}),
    (advanced_indexing, {"A": RNG.normal(size=(3, 4))}),
    (scipy_special_ufuncs, {"x": np.array([0.5, -1.0, 2.0])}),
    (layout, {"x": np.array([0.5, -1.0, 2.0, 0.25]), "A": RNG.normal(size=(3, 4))}),
]


@pytest.mark.parametrize("f, point", CASES, ids=[c[0].__name__ for c in CASES])
def test_traced_function_round_trips(sdk, f, point):
    program = dd.trace(f, **point)
    python_ast(program.dsl)  # valid Python syntax, hence valid DSL syntax
    expected = f(**point)
    expected = np.concatenate([np.ravel(e) for e in expected]) if isinstance(expected, list) else expected
    r = sdk.jacobian(program, point)
    np.testing.assert_allclose(r.value, np.ravel(expected), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.jacobian, fd_jacobian(f, point), rtol=1e-6, atol=1e-7)


def test_readable_text_reuses_the_functions_own_names():
    assert dd.trace(polar, r=(), theta=()).dsl == "[r * cos(theta), r * sin(theta)]\n"

    def f(x, y):
        r = dd.sqrt(x[0] ** 2 + x[1] ** 2)
        return [r * dd.cos(y), r * dd.sin(y), dd.log1p(r)]

    assert dd.trace(f, x=2, y=()).dsl == "r = sqrt(x[0] ** 2 + x[1] ** 2)\n[r * cos(y), r * sin(y), log1p(r)]\n"
    text = dd.trace(shared_subexpression, x=3).dsl
    assert text.splitlines()[0] == "s = exp(-x) + 1"  # used three times: written once


def test_closed_over_arrays_become_named_constants(sdk):
    A = np.array([[1.0, 2.0], [3.0, 4.0]])

    def f(x):
        return dd.sum((A @ x) ** 2)

    program = dd.trace(f, x=2)
    assert list(program.constants) == ["A"] and "A @ x" in program.dsl
    np.testing.assert_array_equal(program.constants["A"], A)
    r = sdk.gradient(program, x=[0.5, -1.0])
    np.testing.assert_allclose(r.gradient["x"], 2 * A.T @ (A @ [0.5, -1.0]), rtol=1e-14)


def test_tracing_refuses_what_cannot_be_written_down():
    with pytest.raises(TypeError, match="where"):
        dd.trace(lambda x: x if x > 0 else -x, x=())
    with pytest.raises(IndexError, match="integers"):
        dd.trace(lambda x: dd.sum(x[x > 0]), x=3)
    with pytest.raises(ValueError, match="broadcast"):
        dd.trace(lambda x, y: x + y, x=3, y=2)
    with pytest.raises(ValueError, match="reserves"):
        dd.trace(lambda sum: sum * 2, sum=3)
    with pytest.raises(TypeError, match="missing"):
        dd.trace(lambda x, y: x + y, x=3)
    with pytest.raises(IndexError):
        dd.trace(lambda x: x[3], x=3)

    def assigns(x):
        y = x * 2
        y[0] = 1.0
        return y

    with pytest.raises(TypeError, match="dd.where"):
        dd.trace(assigns, x=3)
    with pytest.raises(TypeError, match="math functions the language lacks"):
        dd.trace(lambda x: math.copysign(x, 1.0), x=())
    with pytest.raises(AttributeError, match="call dd.sin"):
        dd.trace(lambda x: x.sin(), x=3)
    with pytest.raises(TypeError, match="float only"):
        dd.trace(lambda x: x.astype(int), x=3)


# ---------------------------------------------------------------- precedence, by random expressions

UNARY = ["sin", "cos", "neg", "square", "tanh", "abs"]  # bounded: nesting never overflows
BINARY = ["+", "-", "*", "/", "**", "where", "max"]


def expressions(depth):
    leaf = st.sampled_from(["x", "y", "x0", "c1", "c-"])
    if depth == 0:
        return leaf
    sub = expressions(depth - 1)
    return st.one_of(leaf, st.tuples(st.sampled_from(UNARY), sub), st.tuples(st.sampled_from(BINARY), sub, sub))


def build(e, x, y):
    """The expression on traced values or on numpy arrays alike (bounded, so ** stays finite)."""
    if isinstance(e, str):
        return {"x": x, "y": y, "x0": x[0], "c1": 1.5, "c-": -0.5}[e]
    if len(e) == 2:
        op, a = e
        a = build(a, x, y)
        return -a if op == "neg" else getattr(dd, op)(a)
    op, a, b = e
    a, b = build(a, x, y), build(b, x, y)
    if op == "**":
        return dd.tanh(a) ** 2.0 + (1.0 + dd.tanh(b) ** 2) ** (dd.tanh(a) - 2)
    if op == "/":
        return a / (1.5 + dd.tanh(b))
    if op == "where":
        return dd.where(a < b, a, -b)
    if op == "max":
        return dd.max(a, b)
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def kink_margin(e, x, y) -> float:
    """How far the point is from every switch of a where/max/abs in ``e`` (finite differences of the
    numpy reference are only a reference where the function is smooth around the point)."""
    if isinstance(e, str):
        return np.inf
    if len(e) == 2:
        inner = kink_margin(e[1], x, y)
        return min(inner, float(np.min(np.abs(build(e[1], x, y))))) if e[0] == "abs" else inner
    op, a, b = e
    margin = min(kink_margin(a, x, y), kink_margin(b, x, y))
    if op in ("where", "max"):
        va, vb = build(a, x, y), build(b, x, y)
        margin = min(margin, float(np.min(np.abs(np.asarray(va - vb)))))
    return margin


NAMESPACE = {name: getattr(dd, name) for name in ("sin", "cos", "square", "tanh", "abs", "where", "max")}


@settings(max_examples=150, deadline=None)
@given(expressions(4))
def test_written_precedence_computes_the_same(e):
    x, y = np.array([0.3, -0.6, 0.9]), np.array([-0.2, 0.4, 1.1])
    program = dd.trace(lambda x, y: build(e, x, y) + 0 * x, x=3, y=3)
    *assignments, last = program.dsl.strip().splitlines()
    env = {**NAMESPACE, "x": x, "y": y}
    for line in assignments:
        name, _, expr = line.partition(" = ")
        env[name] = eval(expr, {"__builtins__": {}}, env)  # noqa: S307 - our own generated text
    got = eval(last, {"__builtins__": {}}, env)  # noqa: S307
    np.testing.assert_allclose(got, build(e, x, y) + 0 * x, rtol=1e-13, atol=1e-14)


@settings(max_examples=12, deadline=None)
@given(expressions(3))
def test_random_expressions_round_trip_on_the_server(sdk, e):
    x, y = np.array([0.3, -0.6, 0.9]), np.array([-0.2, 0.4, 1.1])
    assume(kink_margin(e, x, y) > 1e-4)
    f = lambda x, y: dd.sum(build(e, x, y) * x)  # noqa: E731
    r = sdk.gradient(dd.trace(f, x=3, y=3), x=x, y=y)
    assert r.value == pytest.approx(f(x, y), rel=1e-12, abs=1e-12)
    jac = fd_jacobian(f, {"x": x, "y": y})[0]
    np.testing.assert_allclose(np.concatenate([r.gradient["x"], r.gradient["y"]]), jac, rtol=1e-6, atol=1e-7)
