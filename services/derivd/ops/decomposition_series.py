"""Taylor rules of the decompositions eigh, svd and qr: their coefficients to any order.

Each decomposition is defined by identities its factors satisfy along the curve A(t), and the
k-th coefficient of each identity is linear in the k-th coefficients of the factors, with the
lower orders known: the first-order rule (linalg.py's jvp) is the case k = 1, with the sums
over lower orders empty. With series ``X_k`` (coefficient 0 the primal):

eigh, A = V Λ Vᵀ (A the symmetric matrix of A's lower triangle). Write V = V_0 W with W_0 = I
and B = V_0ᵀ A V_0 (so B_0 = Λ_0 and B W = W Λ, Wᵀ W = I). At order k,

    Λ_0 W_k - W_k Λ_0 - Λ_k = R_k := Σ_{j=1..k-1} (W_j Λ_{k-j} - B_j W_{k-j}) - B_k

gives Λ_k = -diag(R_k) and, off the diagonal, (W_k)_il = R_il / (λ_i - λ_l) = -F_il R_il with
linalg.py's gaps F; the diagonal comes from Wᵀ W = I: diag(W_k) = -½ diag(Σ_{j=1..k-1} W_jᵀ W_{k-j})
(the branch whose vectors stay unit vectors and keep their sign: the jvp's, where it is 0).

svd (m >= n; a wide A is the transpose's), A = U S Vᵀ: Aᵀ A = V S² Vᵀ is the eigh case with
B_k = Σ_{j=0..k} P_jᵀ P_{k-j}, P_j = A_j V_0 (P_0 = U_0 S_0, so Aᵀ A is never formed at
t = 0); S = sqrt(S²) by 2 s_0 s_k = λ_k - Σ_{j=1..k-1} s_j s_{k-j}; and U S = A V gives
U_k s_0 = Σ_{j=0..k} P_j W_{k-j} - Σ_{j=0..k-1} U_j s_{k-j} (columns scaled).

qr (m >= n; a wide A = [X | Y] is X's QR and R = [U | Qᵀ Y]), A = Q R: with
E_k = A_k - Σ_{j=1..k-1} Q_j R_{k-j} and S_k = Σ_{j=1..k-1} Q_jᵀ Q_{k-j} (QᵀQ = I makes the
symmetric part of Q_0ᵀ Q_k equal to -½ S_k), X_k = Q_0ᵀ E_k R_0⁻¹ + ½ S_k, Ω_k = L - Lᵀ with
L the strict lower triangle of X_k, then R_k = (X_k - Ω_k) R_0 (upper triangular) and
Q_k = (E_k - Q_0 R_k) R_0⁻¹.

Conventions are the first-order rules': a repeated eigenvalue (singular value) is a 422 from
``spectral_gaps`` for the vectors, and for the values from order 2; the first coefficient of the
values alone reads no gap, so it is answered there, in numpy's basis, as the jvp answers it. svd
divides by s_0, so a zero singular value is a 422 too (for the values from order 2). One helper
primitive per element (``part``): a program reading only the eigenvalues never computes the
vectors' coefficients, so it is not refused for them.
"""

from __future__ import annotations

import numpy as np

from derivd.ops.linalg import _spectral_gaps, eigh_parts, qr_parts, svd_parts, _lower_symmetric
from derivd.ops.registry import FLOAT, Param, Primitive, apply, broadcast_shapes, register


def _t(x):
    return np.swapaxes(x, -1, -2)


def _diag(m):
    return np.diagonal(m, axis1=-2, axis2=-1)


def _with_diag(m, d):
    out = m.copy()
    n = m.shape[-1]
    out[..., np.arange(n), np.arange(n)] = d
    return out


def _eigen_series(B, lam0, need_vectors: bool, nonzero: bool = False):
    """Λ_k and W_k (k = 0..K) from B_1..B_K (B given for k = 1..K, axis 0) and Λ_0 (module doc)."""
    K = len(B)
    shape = np.broadcast_shapes(B.shape[1:], lam0.shape + lam0.shape[-1:])
    n = shape[-1]
    lam = np.zeros((K + 1,) + shape[:-1])
    lam[0] = lam0
    W = np.zeros((K + 1,) + shape)
    W[0] = np.eye(n)
    if K == 1 and not need_vectors:
        lam[1] = _diag(B[0])
        return lam, W
    F = _spectral_gaps(lam0, nonzero)
    for k in range(1, K + 1):
        R = -B[k - 1] + sum(W[j] * lam[k - j][..., None, :] - B[j - 1] @ W[k - j] for j in range(1, k))
        lam[k] = -_diag(R)
        S = sum(_t(W[j]) @ W[k - j] for j in range(1, k))
        W[k] = _with_diag(-F * R, -0.5 * _diag(S) if k > 1 else 0.0)
    return lam, W


def _taylor_eigh(As, w0, V0, part):
    """Coefficients 1..K of eigh's ``part`` ("w" or "V") given the symmetric series As."""
    B = _t(V0) @ As @ V0
    lam, W = _eigen_series(B, w0, part == "V")
    return lam[1:] if part == "w" else V0 @ W[1:]


def _svd_tall(As, U0, s0, V0, parts):
    """(U, s, V) coefficients 1..K of a tall (m >= n) A's thin SVD, those of ``parts`` only."""
    K = len(As)
    if parts == {"s"} and K == 1:  # the first order reads no gap and no division: diag(U_0ᵀ A_1 V_0)
        return None, _diag(_t(U0) @ As @ V0), None
    P = [U0 * s0[..., None, :]] + list(As @ V0)  # P_0..P_K
    B = np.stack([sum(_t(P[j]) @ P[k - j] for j in range(k + 1)) for k in range(1, K + 1)])
    lam, W = _eigen_series(B, s0 * s0, parts != {"s"}, nonzero=True)
    s = np.zeros(lam.shape)
    s[0] = s0
    for k in range(1, K + 1):
        s[k] = (lam[k] - sum(s[j] * s[k - j] for j in range(1, k))) / (2.0 * s0)
    U = None
    if "U" in parts:
        U = np.zeros((K + 1,) + np.broadcast_shapes(P[-1].shape, U0.shape))
        U[0] = U0
        for k in range(1, K + 1):
            U[k] = (sum(P[j] @ W[k - j] for j in range(k + 1))
                    - sum(U[j] * s[k - j][..., None, :] for j in range(k))) / s0[..., None, :]
        U = U[1:]
    return U, s[1:], V0 @ W[1:]


def _taylor_svd(As, U0, s0, Vt0, part):
    m, n = As.shape[-2:]
    if m >= n:
        U, s, V = _svd_tall(As, U0, s0, _t(Vt0), {part})
    else:  # Aᵀ = V S Uᵀ
        V, s, U = _svd_tall(_t(As), _t(Vt0), s0, U0, {{"U": "Vt", "Vt": "U"}.get(part, part)})
    return {"U": U, "s": s, "Vt": None if V is None else _t(V)}[part]


def _right_solve(b, r):
    """b R⁻¹."""
    return _t(np.linalg.solve(_t(r), _t(b)))


def _qr_square_or_tall(As, Q0, R0):
    """(Q, R) coefficients 0..K of A = Q R, m >= n (module doc)."""
    K = len(As)
    shape_q = np.broadcast_shapes(As.shape[1:], Q0.shape)
    Q = np.zeros((K + 1,) + shape_q)
    R = np.zeros((K + 1,) + shape_q[:-2] + R0.shape[-2:])
    Q[0], R[0] = Q0, R0
    n = R0.shape[-1]
    strict = np.tri(n, k=-1)
    for k in range(1, K + 1):
        E = As[k - 1] - sum(Q[j] @ R[k - j] for j in range(1, k))
        X = _t(Q0) @ _right_solve(E, R0) + 0.5 * sum(_t(Q[j]) @ Q[k - j] for j in range(1, k))
        low = X * strict
        R[k] = (X - (low - _t(low))) @ R0
        Q[k] = _right_solve(E - Q0 @ R[k], R0)
    return Q, R


def _taylor_qr(As, Q0, R0, part):
    m, n = As.shape[-2:]
    if m >= n:
        Q, R = _qr_square_or_tall(As, Q0, R0)
        return (Q if part == "Q" else R)[1:]
    Q, U = _qr_square_or_tall(As[..., :m], Q0, R0[..., :m])
    if part == "Q":
        return Q[1:]
    Y = [Q0 @ R0[..., m:]] + list(As[..., m:])  # Y_0 = Q_0 (Q_0ᵀ Y_0), so the primal A is not needed
    V = np.stack([sum(_t(Q[j]) @ Y[k - j] for j in range(k + 1)) for k in range(1, len(As) + 1)])
    lead = np.broadcast_shapes(U[1:].shape[:-1], V.shape[:-1])
    return np.concatenate([np.broadcast_to(U[1:], lead + (m,)), np.broadcast_to(V, lead + (n - m,))], axis=-1)


# ---------------------------------------------------------------- helper primitives and rules


def _eigh_shape(sa, w, v, part):
    shape = broadcast_shapes(sa[0], (1,) + v[0])
    return (shape[:-1] if part == "w" else shape), FLOAT


def _svd_shape(sa, u, s, vt, part):
    m, n = sa[0][-2:]
    k = min(m, n)
    lead = broadcast_shapes(sa[0][:-2], (1,) + u[0][:-2])
    return lead + {"U": (m, k), "s": (k,), "Vt": (k, n)}[part], FLOAT


def _qr_shape(sa, q, r, part):
    m, n = sa[0][-2:]
    k = min(m, n)
    lead = broadcast_shapes(sa[0][:-2], (1,) + q[0][:-2])
    return lead + {"Q": (m, k), "R": (k, n)}[part], FLOAT


def _part(*names):
    return Param(" or ".join(names), lambda v: v in names)


def _on_host(impl, shape_rule):
    """Tier 2 runs the numpy recurrence called back on the host: a few small solves and products per
    order, where XLA would gain nothing, with tier 1's own numbers."""
    def xla(jx, *args, **params):
        shape = shape_rule(*[(tuple(a.shape), FLOAT) for a in args], **params)[0]
        return jx.callback(lambda *values: impl(*values, **params), shape, np.float64, *args)

    return xla


register(Primitive("taylor_eigh", _eigh_shape, impl=_taylor_eigh, xla=_on_host(_taylor_eigh, _eigh_shape),
                   params={"part": _part("w", "V")},
                   doc="(symmetric A series, w_0, V_0; part) -> series of eigh's w or V"))
register(Primitive("taylor_svd", _svd_shape, impl=_taylor_svd, xla=_on_host(_taylor_svd, _svd_shape),
                   params={"part": _part("U", "s", "Vt")},
                   doc="(A series, U_0, s_0, Vt_0; part) -> series of the thin SVD's U, s or Vt"))
register(Primitive("taylor_qr", _qr_shape, impl=_taylor_qr, xla=_on_host(_taylor_qr, _qr_shape),
                   params={"part": _part("Q", "R")},
                   doc="(A series, Q_0, R_0; part) -> series of the reduced QR's Q or R"))


def eigh_taylor(p, s, out, jet):
    w, v = eigh_parts(out)
    sa = _lower_symmetric(s[0])
    return {0: apply("taylor_eigh", sa, w, v, part="w"), 1: apply("taylor_eigh", sa, w, v, part="V")}


def svd_taylor(p, s, out, jet):
    u, sv, vt = svd_parts(out)
    return {i: apply("taylor_svd", s[0], u, sv, vt, part=part) for i, part in enumerate(("U", "s", "Vt"))}


def qr_taylor(p, s, out, jet):
    q, r = qr_parts(out)
    return {0: apply("taylor_qr", s[0], q, r, part="Q"), 1: apply("taylor_qr", s[0], q, r, part="R")}
