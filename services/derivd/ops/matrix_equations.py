"""Matrix equations: scipy.linalg's ``solve_sylvester``, the X with A X + X B = Q.

Differentiating the equation gives another with the same A and B:

    A dX + dX B = dQ - dA X - X dB,   so   dX = solve_sylvester(A, B, dQ - dA X - X dB);

its transpose, with Y = solve_sylvester(Aᵀ, Bᵀ, G) for the cotangent G, is Q̄ = Y, Ā = -Y Xᵀ,
B̄ = -Xᵀ Y; and the Taylor series solves one equation per order,

    A_0 X_k + X_k B_0 = Q_k - Σ_{j=1..k} (A_j X_{k-j} + X_{k-j} B_j)   (``taylor_sylvester``).

Each solve is scipy's Bartels-Stewart (two Schur forms, O(m³ + n³)) on every matrix of a stack.
The equation has one solution exactly when no eigenvalue of A is minus one of B; otherwise
scipy's answer (inf or nan, or a least-squares-like value) is returned as scipy returns it. Tier 2
solves the Kronecker form (I ⊗ A + Bᵀ ⊗ I) vec X = vec Q, O((mn)³), fine at the sizes where
XLA pays.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from derivd.errors import ShapeError
from derivd.ops.linalg import swap
from derivd.ops.registry import FLOAT, SIZE, Primitive, apply, broadcast_shapes, case, floats, register


def _shape(a, b, q):
    sa, sb, sq = a[0], b[0], q[0]
    for name, s in (("A", sa), ("B", sb)):
        if len(s) < 2 or s[-1] != s[-2]:
            raise ShapeError(f"solve_sylvester: {name} must be a square matrix, got shape {list(s)}", shape=list(s))
    if len(sq) < 2 or sq[-2:] != (sa[-1], sb[-1]):
        raise ShapeError(f"solve_sylvester: Q must be {sa[-1]} x {sb[-1]} for A {list(sa)} and B {list(sb)}, "
                         f"got {list(sq)}", shapes=[list(sa), list(sb), list(sq)])
    return broadcast_shapes(sa[:-2], sb[:-2], sq[:-2]) + sq[-2:], FLOAT


def _solve(a, b, q):
    """scipy's solve_sylvester on each matrix of broadcast stacks."""
    a, b, q = (np.asarray(v, dtype=np.float64) for v in (a, b, q))
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2], q.shape[:-2])
    a, b, q = (np.broadcast_to(v, lead + v.shape[-2:]) for v in (a, b, q))
    out = np.empty(lead + q.shape[-2:])
    for i in np.ndindex(lead):
        out[i] = scipy.linalg.solve_sylvester(a[i], b[i], q[i])
    return out


def _solve_xla(jx, a, b, q):
    np_ = jx.np

    def one(a, b, q):
        m, n = q.shape
        k = np_.kron(np_.eye(n), a) + np_.kron(b.T, np_.eye(m))
        return np_.linalg.solve(k, q.T.reshape(-1)).reshape(n, m).T

    return np_.vectorize(one, signature="(m,m),(n,n),(m,n)->(m,n)")(a, b, q)


def _jvp(p, t, out):
    (a, b, _), (ta, tb, tq) = p, t
    terms = [x for x in (tq, None if ta is None else -(ta @ out), None if tb is None else -(out @ tb)) if x is not None]
    if not terms:
        return None
    rhs = terms[0]
    for x in terms[1:]:
        rhs = rhs + x
    return apply("solve_sylvester", a, b, rhs)


def _vjp(p, out, ct):
    a, b, _ = p
    y = apply("solve_sylvester", swap(a), swap(b), ct)
    return [-(y @ swap(out)), -(swap(out) @ y), y]


def _taylor(p, s, out, jet):
    (a, b, _), (sa, sb, sq) = p, s
    order = next(x.shape[0] for x in s if x is not None)
    zero = 0.0
    return apply("taylor_sylvester", a, b, zero if sa is None else sa, zero if sb is None else sb,
                 zero if sq is None else sq, out, order=order)


register(Primitive(
    "solve_sylvester", _shape, impl=_solve, xla=_solve_xla, jvp=_jvp, vjp=_vjp, taylor=_taylor, broadcasting=True,
    sample=[case(("spd", (3, 3)), ("spd", (2, 2)), (3, 2)), case(("spd", (2, 2)), ("spd", (2, 2, 2)), (2, 2))],
    dsl={"solve_sylvester": floats("solve_sylvester", 3)},
    doc="scipy.linalg.solve_sylvester(A, B, Q): X with A X + X B = Q (Bartels-Stewart); on stacks",
))


def _series_shape(a0, b0, sa, sb, sq, x0, order):
    """Series (order, *batch, m, n): ``sa``, ``sb``, ``sq`` are 0.0 where constant, else (order, *batch, ...)."""
    lead = broadcast_shapes(*(s[0][1:-2] for s in (sa, sb, sq) if s[0]), x0[0][:-2])
    return (order,) + lead + x0[0][-2:], FLOAT


def _recurrence(solve, broadcast, a0, b0, sa, sb, sq, x0, shape):
    """X_k = solve(A_0, B_0, Q_k - Σ_{j=1..k} (A_j X_{k-j} + X_{k-j} B_j)), for numpy or jax."""
    xs = [broadcast(x0, shape[1:])]
    for k in range(1, shape[0] + 1):
        rhs = broadcast(sq[k - 1] if np.ndim(sq) else 0.0, shape[1:])
        for j in range(1, k + 1):
            if np.ndim(sa):
                rhs = rhs - sa[j - 1] @ xs[k - j]
            if np.ndim(sb):
                rhs = rhs - xs[k - j] @ sb[j - 1]
        xs.append(solve(a0, b0, rhs))
    return xs[1:]


def _series(a0, b0, sa, sb, sq, x0, order):
    shape = _series_shape(*((np.shape(v),) for v in (a0, b0, sa, sb, sq, x0)), order)[0]
    return np.stack(_recurrence(_solve, np.broadcast_to, a0, b0, sa, sb, sq, x0, shape))


def _series_xla(jx, a0, b0, sa, sb, sq, x0, order):
    shape = _series_shape(*((jx.np.shape(v),) for v in (a0, b0, sa, sb, sq, x0)), order)[0]
    solve = lambda a, b, q: _solve_xla(jx, a, b, q)  # noqa: E731
    return jx.np.stack(_recurrence(solve, jx.np.broadcast_to, a0, b0, sa, sb, sq, x0, shape))


register(Primitive("taylor_sylvester", _series_shape,
                   impl=_series, xla=_series_xla, params={"order": SIZE},
                   doc="(A_0, B_0, A series, B series, Q series, X_0) -> series of solve_sylvester(A, B, Q)"))
