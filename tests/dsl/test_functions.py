"""Every function of CONTRACT §1, written in the DSL, against a separate numpy implementation:
its value, and forward and reverse Jacobians against 8th-order finite differences of numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sp

from derivd.errors import DerivdError
from tests.dsl.support import assert_close, call, check_against_numpy, flat_gradient, second_order
from tests.references import fd_jacobian

X = np.array([0.3, -0.7, 1.1])  # away from every kink of the functions below
POS = np.array([0.4, 1.3, 2.2])
UNIT = np.array([-0.6, 0.2, 0.5])
BIG = np.array([1.3, 2.2, 3.1])

UNARY = {
    "abs": (np.abs, X), "sign": (np.sign, X), "sqrt": (np.sqrt, POS), "cbrt": (np.cbrt, X),
    "exp": (np.exp, X), "exp2": (np.exp2, X), "expm1": (np.expm1, X), "log": (np.log, POS),
    "log2": (np.log2, POS), "log10": (np.log10, POS), "log1p": (np.log1p, UNIT),
    "sin": (np.sin, X), "cos": (np.cos, X), "tan": (np.tan, X), "asin": (np.arcsin, UNIT),
    "acos": (np.arccos, UNIT), "atan": (np.arctan, X), "sinh": (np.sinh, X), "cosh": (np.cosh, X),
    "tanh": (np.tanh, X), "asinh": (np.arcsinh, X), "acosh": (np.arccosh, BIG), "atanh": (np.arctanh, UNIT),
    "erf": (sp.erf, X), "erfc": (sp.erfc, X), "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), X),
    "softplus": (lambda x: np.log(1 + np.exp(x)), X), "relu": (lambda x: np.where(x > 0, x, 0.0), X),
    "square": (lambda x: x * x, X), "reciprocal": (lambda x: 1 / x, X),
    "floor": (np.floor, X + 0.05), "ceil": (np.ceil, X + 0.05), "round": (np.round, X + 0.05),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_elementwise_unary(name):
    f, x = UNARY[name]
    check_against_numpy(f"{name}(x)", lambda x: f(x), {"x": x})
    check_against_numpy(f"{name}(x[1]) * 2", lambda x: 2 * f(x[1]), {"x": x})  # the rank-0 (math) path


A, B = np.array([[0.5, -1.2, 2.0], [1.5, 0.7, -0.4]]), np.array([0.9, 1.7, -0.8])
BINARY = [
    ("atan2(a, b)", np.arctan2), ("hypot(a, b)", np.hypot), ("maximum(a, b)", np.maximum),
    ("minimum(a, b)", np.minimum), ("a + b", np.add), ("a - b", np.subtract), ("a * b", np.multiply),
    ("a / b", np.divide), ("a % b", np.mod), ("a // b", np.floor_divide), ("max(a, b)", np.maximum),
    ("min(a, b, 0.1)", lambda a, b: np.minimum(np.minimum(a, b), 0.1)),
]


@pytest.mark.parametrize("dsl,f", BINARY, ids=[b[0] for b in BINARY])
def test_elementwise_binary_broadcasting(dsl, f):
    check_against_numpy(dsl, lambda a, b: f(a, b), {"a": A, "b": B})


@pytest.mark.parametrize("dsl,f,at", [
    ("pow(a, b)", lambda a, b: a ** b, {"a": np.abs(A) + 0.1, "b": B}),
    ("a ** b", lambda a, b: a ** b, {"a": np.abs(A) + 0.1, "b": B}),
    ("a ** 3 + a ** 2 + a ** 0.5 + a ** -1 + a ** 1.5", lambda a: a**3 + a**2 + a**0.5 + 1 / a + a**1.5,
     {"a": np.abs(A) + 0.1}),
    ("clip(a, -1, 1)", lambda a: np.clip(a, -1, 1), {"a": A}),
    ("clip(a, lo, hi)", lambda a, lo, hi: np.clip(a, lo, hi), {"a": A, "lo": -1.0, "hi": np.array([1.0, 0.5, 1.8])}),
    ("-a + +a * 2", lambda a: a, {"a": A}),
])
def test_power_clip_and_unary_operators(dsl, f, at):
    check_against_numpy(dsl, f, at)


M = np.array([[0.5, -1.2, 2.0, 0.1], [1.5, 0.7, -0.4, -2.2], [0.3, 0.9, -1.1, 0.6]])
T3 = np.arange(24.0).reshape(2, 3, 4) / 7 - 1.5


@pytest.mark.parametrize("name,f", [
    ("sum", np.sum), ("prod", np.prod), ("mean", np.mean), ("max", np.max), ("min", np.min),
    ("logsumexp", lambda x, axis=None: np.log(np.sum(np.exp(x), axis=axis))),
    ("norm", lambda x, axis=None: np.sqrt(np.sum(x * x, axis=axis))),
])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (-1, 0), 1])
def test_reductions_with_axes(name, f, axis):
    dsl = f"{name}(x)" if axis is None else f"{name}(x, axis={axis})"
    check_against_numpy(dsl, lambda x: f(x, axis=axis), {"x": T3})


def test_softmax_and_reductions_of_matrices():
    def softmax(x, axis):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    check_against_numpy("softmax(x)", lambda x: softmax(x, -1), {"x": M})
    check_against_numpy("softmax(x, axis=0)", lambda x: softmax(x, 0), {"x": M})
    check_against_numpy("softmax(x, axis=(0, 1))", lambda x: softmax(x, (0, 1)), {"x": M})
    check_against_numpy("prod(x, axis=1)", lambda x: np.prod(x, axis=1), {"x": M})


def test_logsumexp_softmax_sigmoid_softplus_are_stable_at_large_values():
    x = np.array([1000.0, 1000.0, -1000.0])
    r = call("gradient", "logsumexp(x)", {"x": x})
    assert_close(r["value"], 1000 + np.log(2), 1e-15)
    assert_close(r["gradient"]["x"], [0.5, 0.5, 0.0], 1e-15)
    r = call("jacobian", "softmax(x)", {"x": x}, mode="reverse")
    assert_close(r["value"], [0.5, 0.5, 0.0], 1e-15)
    assert np.all(np.isfinite(r["jacobian"]))
    for at, value, slope in [(800.0, 1.0, 0.0), (-800.0, 0.0, 0.0), (30.0, sp.expit(30.0), sp.expit(30) * sp.expit(-30))]:
        r = call("gradient", "sigmoid(x)", {"x": at})
        assert r["value"] == pytest.approx(value, rel=1e-15, abs=1e-300)
        assert r["gradient"]["x"] == pytest.approx(slope, rel=1e-12, abs=1e-300)
    r = call("gradient", "softplus(x)", {"x": 800.0})
    assert (r["value"], r["gradient"]["x"]) == (800.0, 1.0)
    r = call("gradient", "softplus(x)", {"x": -800.0})
    assert r["value"] == pytest.approx(np.exp(-800.0), abs=1e-300) and r["gradient"]["x"] == pytest.approx(0.0, abs=1e-300)
    assert_close(call("gradient", "log1p(x)", {"x": 1e-20})["value"], 1e-20, 1e-15)
    assert_close(call("gradient", "expm1(x)", {"x": 1e-20})["value"], 1e-20, 1e-15)


def test_norm_and_its_gradient_at_zero():
    r = call("gradient", "norm(x)", {"x": [0.0, 0.0, 0.0]})
    assert r["value"] == 0.0 and np.array_equal(r["gradient"]["x"], np.zeros(3))
    r = call("jvp", "norm(x)", {"x": [0.0, 0.0]}, v={"x": [1.0, 2.0]})
    assert r["jvp"] == [0.0] or np.array_equal(r["jvp"], [0.0])
    check_against_numpy("norm(x)", lambda x: np.linalg.norm(x), {"x": X})


# ---------------------------------------------------------------- linear algebra and shapes

V3, V4 = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.3, -0.2, 0.7])
S3 = np.array([[[0.2, 1.0, -0.5], [0.7, -0.3, 0.4]], [[1.1, 0.2, 0.3], [-0.6, 0.8, 0.9]]])  # (2, 2, 3)


@pytest.mark.parametrize("a,b", [(V3, V3), (V3, M), (M.T, V3), (M, M.T), (S3, M[:, :2]), (M[:2, :2], S3),
                                 (S3, np.swapaxes(S3, -1, -2)), (V3[:2], S3), (S3, V3)],
                         ids=["1x1", "1x2", "2x1", "2x2", "3x2", "2x3", "3x3", "1x3", "3x1"])
def test_matmul_every_rank_combination(a, b):
    check_against_numpy("a @ b", lambda a, b: a @ b, {"a": a, "b": b})
    check_against_numpy("matmul(a, b)", lambda a, b: a @ b, {"a": a, "b": b})
    if a.ndim <= 2 and b.ndim <= 2:
        check_against_numpy("dot(a, b)", lambda a, b: np.dot(a, b), {"a": a, "b": b})


def test_dot_with_a_scalar_outer_transpose_trace_diag():
    check_against_numpy("dot(s, a)", lambda s, a: s * a, {"s": 1.5, "a": M})
    check_against_numpy("outer(a, b)", lambda a, b: np.outer(a, b), {"a": V3, "b": V4})
    check_against_numpy("transpose(a)", np.transpose, {"a": S3})
    check_against_numpy("transpose(a, (1, 2, 0))", lambda a: np.transpose(a, (1, 2, 0)), {"a": S3})
    check_against_numpy("a.T", lambda a: a.T, {"a": M})
    check_against_numpy("trace(a)", np.trace, {"a": M[:, :3]})
    check_against_numpy("diag(a)", lambda a: np.diag(a), {"a": M})  # matrix -> its diagonal (non-square)
    check_against_numpy("diag(v)", np.diag, {"v": V3})  # vector -> a diagonal matrix


def test_reshape_concat_stack_and_constructors():
    check_against_numpy("reshape(a, (-1, 2))", lambda a: a.reshape(-1, 2), {"a": M})
    check_against_numpy("reshape(a, (2, -1, 3))", lambda a: a.reshape(2, -1, 3), {"a": M})
    check_against_numpy("reshape(a, -1)", lambda a: a.reshape(-1), {"a": M})
    check_against_numpy("concat([a, b, a], axis=1)", lambda a, b: np.concatenate([a, b, a], axis=1),
                        {"a": M, "b": M[:, :1]})
    check_against_numpy("concat([a, b])", lambda a, b: np.concatenate([a, b]), {"a": M, "b": M[:1]})
    check_against_numpy("concat([a, b], axis=-1)", lambda a, b: np.concatenate([a, b], -1), {"a": V3, "b": V4})
    for axis in (0, 1, -1):
        check_against_numpy(f"stack([a, b, a], axis={axis})", lambda a, b: np.stack([a, b, a], axis=axis),
                            {"a": M, "b": M * 2})
    check_against_numpy("stack([a[0], a[1] * a[2]])", lambda a: np.stack([a[0], a[1] * a[2]]), {"a": V3})
    check_against_numpy("zeros((2, 3)) + ones(3) * a + eye(3) @ a + arange(3) * a + len(a)",
                        lambda a: np.zeros((2, 3)) + a + a + np.arange(3) * a + 3, {"a": V3})
    check_against_numpy("zeros(2) + a[0] + len(b) + ones((2,)) * len(m)", lambda a, b, m: np.zeros(2) + a[0] + 4 + 3,
                        {"a": V3, "b": V4, "m": M})
    for args in ("1, 6", "0, 1, 0.1", "5, 1, -1", "2.5, 7", "3, 3", "-1, 1, 0.25"):  # extension: numpy's forms
        want = np.arange(*[float(a) for a in args.split(",")])
        check_against_numpy(f"sum(arange({args}) * a[0]) + a[1]", lambda a, w=want: np.sum(w * a[0]) + a[1],
                            {"a": V3})
    r = call("evaluate", "[len(a), a.shape[1], a.ndim, a.size, eye(2)[1, 0]]", {"a": M})
    assert np.array_equal(r["value"], [3, 4, 2, 12, 0])


SPD = np.array([[4.0, 1.2, -0.5], [1.2, 3.0, 0.7], [-0.5, 0.7, 2.5]])
GEN = np.array([[1.5, -0.3, 0.8], [0.2, -2.0, 0.4], [0.9, 0.1, 1.1]])  # det < 0


@pytest.mark.parametrize("dsl,f,at", [
    ("solve(a, b)", lambda a, b: np.linalg.solve(a, b), {"a": GEN, "b": V3}),
    ("solve(a, b)", lambda a, b: np.linalg.solve(a, b), {"a": GEN, "b": M[:, :2]}),
    ("inv(a)", np.linalg.inv, {"a": GEN}),
    ("det(a)", np.linalg.det, {"a": GEN}),
    ("det(a)", np.linalg.det, {"a": np.stack([GEN, SPD])}),
    ("slogdet(a)[1]", lambda a: np.linalg.slogdet(a)[1], {"a": GEN}),
    ("[slogdet(a)[0], slogdet(a)[1]]", lambda a: np.array(np.linalg.slogdet(a)), {"a": GEN}),
    ("cholesky(a)", lambda a: np.linalg.cholesky((a + a.T) / 2), {"a": SPD}),
    ("cholesky(a @ a.T + eye(3))", lambda a: np.linalg.cholesky(a @ a.T + np.eye(3)), {"a": GEN}),
])
def test_linear_algebra_and_derivatives(dsl, f, at):
    check_against_numpy(dsl, f, at)


def test_linear_algebra_second_order_against_finite_differences_of_the_gradient():
    """Hessians of det, logabsdet, inv, solve and cholesky compositions: jvp of vjp vs FD of the
    service's own (already checked) gradient."""
    for dsl, at in [("det(a)", {"a": GEN}), ("slogdet(a)[1]", {"a": GEN}), ("sum(inv(a) * a)", {"a": GEN}),
                    ("sum(solve(a, b) ** 2)", {"a": GEN, "b": V3}), ("sum(cholesky(a) ** 3)", {"a": SPD})]:
        _, grad, hess = second_order(dsl, at)
        fd = fd_jacobian(lambda **kw: flat_gradient(dsl, kw), at)
        assert_close(grad, flat_gradient(dsl, at), 1e-12, f"{dsl}: gradient")
        assert_close(hess, fd, 1e-6, f"{dsl}: Hessian")
        assert_close(hess, hess.T, 1e-10, f"{dsl}: Hessian symmetry")


def test_solve_of_a_singular_matrix_is_a_4xx():
    with pytest.raises(DerivdError) as e:
        call("gradient", "sum(solve(a, b))", {"a": np.ones((2, 2)), "b": [1.0, 2.0]})
    assert 400 <= e.value.status < 500


@pytest.mark.parametrize("dsl,code,status", [
    ("arange(0, 5, 0) * a[0]", "bad_arguments", 400),
    ("arange(0, a[0]) * a[0]", "type_error", 400),
    ("arange(0, 1e12) * a[0]", "limit_exceeded", 413),  # refused while lowering, never allocated
])
def test_arange_refuses_what_numpy_could_not_build(dsl, code, status):
    with pytest.raises(DerivdError) as e:
        call("evaluate", dsl, {"a": V3})
    assert (e.value.code, e.value.status) == (code, status)


def test_named_constants_and_literals():
    check_against_numpy("x * pi + e - True * x ** 2 + False + 1e-3 + 2.5 * 3",
                        lambda x: x * np.pi + np.e - x**2 + 1e-3 + 7.5, {"x": V3})
    check_against_numpy("-x[0] + +x[1] - -x[2]", lambda x: -x[0] + x[1] + x[2], {"x": V3})
