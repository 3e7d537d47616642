"""Peer agreement for linear algebra (see harness.py), at random well-conditioned points, on single
matrices and stacks. Eigen- and singular vectors are compared through gauge-invariant functions
(their squared entries: a vector's sign is numpy's choice), eigh's input is symmetrised in both
programs (numpy reads its lower triangle, JAX its symmetric part: the same function there), and
where the peer lacks a function it is written from its definition in the peer's numpy (expm by
scaling and squaring, qr from a Cholesky factor, lstsq from the normal equations).

eigh, svd and qr are tuple-valued: the registry sweeps draw them through their views, and their
second derivatives are checked here against autograd's Hessians. Their Taylor rules have no peer
(jax.experimental.jet has no rule for eigh, svd or qr): tests/ops/test_decomposition_series.py
checks them against numpy along a line.
"""

import numpy as np
import pytest

from derivd.errors import DerivdError
from tests.dsl.support import call
from tests.peers import harness
from tests.peers.harness import Case, check

RNG = np.random.default_rng(61)


def T(np, x):
    return np.swapaxes(x, -1, -2)


def general(*shape):
    return RNG.normal(size=shape)


def invertible(*shape):
    return RNG.uniform(-0.5, 0.5, size=shape) + 2.0 * np.eye(shape[-1])


def spd(*shape):
    r = RNG.uniform(-1.0, 1.0, size=shape)
    return r @ np.swapaxes(r, -1, -2) / shape[-1] + np.eye(shape[-1])


W3 = RNG.normal(size=(3, 3))
W42 = RNG.normal(size=(4, 2))
W24 = RNG.normal(size=(2, 4))
W22 = RNG.normal(size=(2, 2))


def expm(np, a, s=6, terms=18):
    """exp(A) = (Σ_k (A/2^s)^k / k!)^(2^s)."""
    x = a / 2.0 ** s
    out, term = np.eye(a.shape[-1]) + 0.0 * a, np.eye(a.shape[-1]) + 0.0 * a
    for k in range(1, terms):
        term = term @ x / k
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


def sym_log(np, a):
    w, v = np.linalg.eigh(0.5 * (a + T(np, a)))
    return (v * np.log(w)[..., None, :]) @ T(np, v)


def qr_peer(np, a):
    """(Q², R²) of numpy's QR from the Cholesky factor of AᵀA (the squares do not see the signs)."""
    r = T(np, np.linalg.cholesky(T(np, a) @ a))
    q = T(np, np.linalg.solve(T(np, r), T(np, a)))
    return q * q, r * r


def mpow(np, a, n):
    out = np.linalg.inv(a) if n < 0 else a
    base = out
    for _ in range(abs(n) - 1):
        out = out @ base
    return out


CASES = [
    # the decompositions, through gauge-invariant functions
    Case("w, V = eigh(A + transpose(A))\nsum(w * [1.0, 2.0, 4.0]) + sum(V * V * W)",
         lambda np, A, W: (lambda w, v: np.sum(w * np.array([1.0, 2.0, 4.0])) + np.sum(v * v * W))(
             *np.linalg.eigh(A + A.T)), {"A": general(3, 3)}, {"W": W3}),
    Case("w, V = eigh(A + transpose(A, (0, 2, 1)))\nsum(w ** 2) + sum(V * V * W)",
         lambda np, A, W: (lambda w, v: np.sum(w ** 2) + np.sum(v * v * W))(*np.linalg.eigh(A + T(np, A))),
         {"A": general(2, 3, 3)}, {"W": W3}),
    Case("sum(eigvalsh(A + transpose(A)) ** 3)", lambda np, A: np.sum(np.linalg.eigh(A + A.T)[0] ** 3),
         {"A": general(3, 3)}),
    Case("U, s, Vt = svd(A, full_matrices=False)\nsum(s * [1.0, 3.0]) + sum(U * U * W) + sum(Vt * Vt * W2)",
         lambda np, A, W, W2: (lambda u, s, vt: np.sum(s * np.array([1.0, 3.0])) + np.sum(u * u * W)
                               + np.sum(vt * vt * W2))(*np.linalg.svd(A, full_matrices=False)),
         {"A": general(4, 2)}, {"W": W42, "W2": W22}),
    Case("U, s, Vt = svd(A, full_matrices=False)\nsum(s ** 2) + sum(U * U * W2) + sum(Vt * Vt * W)",
         lambda np, A, W, W2: (lambda u, s, vt: np.sum(s ** 2) + np.sum(u * u * W2) + np.sum(vt * vt * W))(
             *np.linalg.svd(A, full_matrices=False)), {"A": general(2, 2, 4)}, {"W": W24, "W2": W22}),
    Case("sum(svd(A, compute_uv=False))", lambda np, A: np.sum(np.linalg.svd(A, compute_uv=False)),
         {"A": general(3, 3)}),
    Case("Q, R = qr(A)\nsum(Q * Q * W) + sum(R * R * W2)",
         lambda np, A, W, W2: (lambda q2, r2: np.sum(q2 * W) + np.sum(r2 * W2))(*qr_peer(np, A)),
         {"A": general(4, 2)}, {"W": W42, "W2": W22}),
    Case("Q, R = qr(A)\nsum(Q * Q * W) + sum(R * R * W)",
         lambda np, A, W: (lambda q2, r2: np.sum(q2 * W) + np.sum(r2 * W))(*qr_peer(np, A)),
         {"A": general(2, 3, 3)}, {"W": W3}),
    # functions of matrices
    Case("sum(pinv(A) * W)", lambda np, A, W: np.sum(np.linalg.pinv(A) * W), {"A": general(4, 2)}, {"W": W24}),
    Case("sum(pinv(A) * W)", lambda np, A, W: np.sum(np.linalg.pinv(A) * W), {"A": general(2, 4)}, {"W": W42}),
    Case("sum(solve_triangular(A, b, lower=True) ** 2)",
         lambda np, A, b: np.sum(np.linalg.solve(np.tril(A), b) ** 2), {"A": invertible(3, 3), "b": general(3)}),
    Case("sum(solve_triangular(A, B) * W)", lambda np, A, B, W: np.sum(np.linalg.solve(np.triu(A), B) * W),
         {"A": invertible(3, 3), "B": general(3, 3)}, {"W": W3}),
    Case("x, res, rank, s = lstsq(A, b)\nsum(x ** 2) + sum(res) + sum(s)",
         lambda np, A, b: (lambda x: np.sum(x ** 2) + np.sum((A @ x - b) ** 2)
                           + np.sum(np.linalg.svd(A, compute_uv=False)))(np.linalg.solve(A.T @ A, A.T @ b)),
         {"A": general(4, 2), "b": general(4)}),
    Case("sum(matrix_power(A, 3) * W)", lambda np, A, W: np.sum(mpow(np, A, 3) * W), {"A": general(3, 3)}, {"W": W3}),
    Case("sum(matrix_power(A, -2) * W)", lambda np, A, W: np.sum(mpow(np, A, -2) * W), {"A": invertible(3, 3)},
         {"W": W3}),
    Case("sum(multi_dot([a, B, C, d]))", lambda np, a, B, C, d: np.sum(a @ B @ C @ d),
         {"a": general(3), "B": general(3, 4), "C": general(4, 2), "d": general(2)}),
    Case("sum(expm(A) * W)", lambda np, A, W: np.sum(expm(np, A) * W), {"A": 0.5 * general(3, 3)}, {"W": W3}),
    Case("sum(expm(A) * W)", lambda np, A, W: np.sum(expm(np, A) * W), {"A": 0.5 * general(2, 3, 3)}, {"W": W3}),
    Case("sum(logm(0.5 * (A + transpose(A))) * W)", lambda np, A, W: np.sum(sym_log(np, A) * W), {"A": spd(3, 3)},
         {"W": W3}),
    # norm's orders (peered by their definitions)
    Case("norm(x, 1) + norm(x, 3) + norm(x, 0.5)", lambda np, x: np.sum(np.abs(x)) + np.sum(np.abs(x) ** 3) ** (1 / 3)
         + np.sum(np.abs(x) ** 0.5) ** 2, {"x": general(4)}),
    Case("norm(X, 2) + norm(X, -2)",
         lambda np, X: (lambda s: np.max(s) + np.min(s))(np.linalg.svd(X, compute_uv=False)),
         {"X": general(3, 4)}),
    Case("norm(X, 1) + norm(X, -1)", lambda np, X: np.max(np.sum(np.abs(X), 0)) + np.min(np.sum(np.abs(X), 0)),
         {"X": general(3, 4)}),
    Case("sum(norm(S, 2, axis=(2, 0)))", lambda np, S: np.sum(np.max(np.linalg.svd(np.transpose(S, (1, 2, 0)),
                                                                                       compute_uv=False), -1)),
         {"S": general(2, 3, 4)}),
    Case("sum(norm(S, 4, axis=1, keepdims=True) * S)",
         lambda np, S: np.sum(np.sum(np.abs(S) ** 4, axis=1, keepdims=True) ** 0.25 * S), {"S": general(2, 3, 4)}),
    # the existing functions on stacks
    Case("sum(inv(A) * W)", lambda np, A, W: np.sum(np.linalg.inv(A) * W), {"A": invertible(2, 3, 3)}, {"W": W3}),
    Case("sum(det(A) ** 2)", lambda np, A: np.sum(np.linalg.det(A) ** 2), {"A": invertible(2, 2, 3, 3)}),
    Case("sign, logdet = slogdet(A)\nsum(logdet * sign)", lambda np, A: np.sum(np.linalg.slogdet(A)[1]
                                                                          * np.linalg.slogdet(A)[0]),
         {"A": invertible(3, 3, 3)}),
    Case("sum(solve(A, B) * W)", lambda np, A, B, W: np.sum(np.linalg.solve(A, B) * W),
         {"A": invertible(2, 3, 3), "B": general(2, 3, 3)}, {"W": W3}),
    Case("sum(cholesky(A) * W)", lambda np, A, W: np.sum(np.linalg.cholesky(0.5 * (A + T(np, A))) * W),
         {"A": spd(2, 3, 3)}, {"W": W3}),
]

# functions JAX does not differentiate as numpy defines them, or has not: autograd is their peer
AUTOGRAD_ONLY = ("sqrtm(",)

CASES.append(Case("sum(sqrtm(A) * W)", lambda np, A, W: np.sum(__import__("autograd.scipy.linalg").scipy.linalg.sqrtm(A)
                                                              * W), {"A": spd(3, 3)}, {"W": W3}))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_matches_the_peer(case, monkeypatch):
    if any(name in case.dsl for name in AUTOGRAD_ONLY):
        monkeypatch.setattr(harness, "PEERS", {"autograd": harness.PEERS["autograd"]})
    check(case)


# ---------------------------------------------------------------- second order of the decompositions

HESSIAN_CASES = [CASES[0], CASES[3], CASES[6]]


@pytest.mark.parametrize("case", HESSIAN_CASES, ids=str)
def test_hessian_of_a_decomposition_matches_autograds(case):
    import autograd
    import autograd.numpy as anp

    (name, x), = case.at.items()
    consts = list(case.constants.values())
    want = autograd.hessian(lambda a: case.peer(anp, a, *consts))(x)
    got = call("hessian", case.dsl, case.at, case.constants)["hessian"]
    np.testing.assert_allclose(got, want.reshape(x.size, x.size), rtol=1e-7, atol=1e-7 * np.max(np.abs(want)))


# ---------------------------------------------------------------- edges


@pytest.mark.parametrize("dsl", ["w, V = eigh(A)\nsum(V * V * W)",
                                 "U, s, Vt = svd(A, full_matrices=False)\nsum(U * W)"])
def test_a_repeated_spectrum_refuses_the_vector_derivative(dsl):
    """At a repeated eigenvalue (singular value) the vectors' derivative does not exist: a 422 that
    says so, never a NaN; the values' derivative is still answered."""
    a = np.diag([1.0, 1.0, 2.0])
    with pytest.raises(DerivdError, match="repeat") as refused:
        call("gradient", dsl, {"A": a}, {"W": W3})
    assert refused.value.status == 422
    values = call("gradient", dsl.split("\n")[0] + "\nsum(" + ("w" if "eigh" in dsl else "s") + " ** 2)", {"A": a})
    np.testing.assert_allclose(values["gradient"]["A"], 2 * a)


def test_det_gradient_at_a_singular_matrix_is_the_adjugate():
    """d det / dA_ij = the (i, j) cofactor, also where det = 0 (here written out by hand)."""
    a = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])
    cof = np.array([[a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1], -(a[1, 0] * a[2, 2] - a[1, 2] * a[2, 0]),
                     a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]],
                    [-(a[0, 1] * a[2, 2] - a[0, 2] * a[2, 1]), a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0],
                     -(a[0, 0] * a[2, 1] - a[0, 1] * a[2, 0])],
                    [a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1], -(a[0, 0] * a[1, 2] - a[0, 2] * a[1, 0]),
                     a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]]])
    for mode in ("reverse", "forward"):
        got = call("gradient", "det(A)", {"A": a}, mode=mode)["gradient"]["A"]
        np.testing.assert_allclose(got, cof, atol=1e-12)
    zero = np.zeros((3, 3))
    np.testing.assert_allclose(call("gradient", "det(A)", {"A": zero})["gradient"]["A"], zero, atol=1e-15)
