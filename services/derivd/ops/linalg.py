"""Linear algebra on the last two (core) axes, with any leading stack axes.

``matmul`` takes operands of rank >= 2 (the DSL reshapes vectors), so that a
batched tangent is just one more stack axis. Rules (standard, e.g. Giles 2008,
"Collected matrix derivative results"), with X = inv(A), S = swap(X):

    inv:      dX = -X dA X                    Ā = -S X̄ S
    det:      d det = det * <S, dA>           Ā = ct * det * S
    logabsdet d = <S, dA>                     Ā = ct * S
    solve:    dX = solve(A, dB - dA X)        B̄ = solve(Aᵀ, X̄), Ā = -B̄ Xᵀ
    cholesky: dL = L Φ(L⁻¹ dA L⁻ᵀ)            Ā = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹)

where Φ keeps the lower triangle and halves the diagonal. ``cholesky(A)`` is the
factor of the symmetric part ½(A + Aᵀ), so its derivative is defined for every
entry of A and agrees with finite differences.
"""

from __future__ import annotations

from derivd.errors import ShapeError
from derivd.ops.registry import (
    FLOAT, Primitive, apply, broadcast_shapes, case, nullary, register, scale,
)
from derivd.ops.taylor_kernels import bilinear, constant


def swap(x):
    return apply("transpose", x, perm=(1, 0))


def _sum2(x):
    return apply("sum", x, axes=(-2, -1))


def _matmul_shape(a, b):
    sa, sb = a[0], b[0]
    if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2]:
        raise ShapeError(f"matmul: shapes {list(sa)} and {list(sb)} are not aligned", shapes=[list(sa), list(sb)])
    return broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1]), FLOAT


def _matmul_jvp(p, t, out):
    a, b = p
    terms = [t[0] @ b if t[0] is not None else None, a @ t[1] if t[1] is not None else None]
    terms = [x for x in terms if x is not None]
    return None if not terms else terms[0] if len(terms) == 1 else terms[0] + terms[1]


register(Primitive("matmul", _matmul_shape, template="({0} @ {1})", jvp=_matmul_jvp,
                   vjp=lambda p, out, ct: [ct @ swap(p[1]), swap(p[0]) @ ct], taylor=bilinear, broadcasting=True,
                   sparsity=("matmul", ((0, 1),)),
                   sample=[case(a, b) for a, b in [((2, 3), (3, 4)), ((3, 3), (3, 1)), ((2, 2, 3), (3, 2)),
                                                   ((2, 3), (2, 3, 2))]]))


MATRIX = ("matrix", "all")  # every output entry reads every entry of its matrix


def of_square(prim):
    """The language's ``f(a)`` of a square matrix (or a stack of them), as floats."""
    return {prim: lambda lib, a: apply(prim, lib.square(prim, a))}

SQUARE = [case(("invertible", (3, 3))), case(("invertible", (2, 2, 2)))]  # sweep cases of square matrices


def _square_shape(a, **_):
    s = a[0]
    if len(s) < 2 or s[-1] != s[-2]:
        raise ShapeError(f"expected a square matrix, got shape {list(s)}", shape=list(s))
    return s, FLOAT


def _det_shape(a):
    return _square_shape(a)[0][:-2], FLOAT


def _expand2(y):
    """Append two unit axes, so a per-matrix scalar scales a matrix."""
    return apply("reshape", y, shape=y.shape + (1, 1), in_ndim=len(y.shape))


register(Primitive(
    "inv", _square_shape, template="np.linalg.inv({0})",
    jvp=lambda p, t, out: None if t[0] is None else -(out @ t[0] @ out),
    vjp=lambda p, out, ct: [-(swap(out) @ ct @ swap(out))],
    taylor=lambda p, s, out, jet: apply("taylor_inv", s[0], out), sparsity=MATRIX, sample=SQUARE, dsl=of_square("inv"),
))
register(Primitive(
    "det", _det_shape, template="np.linalg.det({0})",
    jvp=lambda p, t, out: None if t[0] is None else out * _sum2(swap(apply("inv", p[0])) * t[0]),
    vjp=lambda p, out, ct: [_expand2(scale(ct, out)) * swap(apply("inv", p[0]))],
    taylor=lambda p, s, out, jet: apply(  # d det = det · d log|det|
        "taylor_riccati", jet.series(apply("logabsdet", p[0])), out, a=0.0, b=1.0, c=0.0),
    sparsity=MATRIX, sample=SQUARE, dsl=of_square("det"),
))
register(Primitive(
    "logabsdet", _det_shape, template="np.linalg.slogdet({0})[1]",
    jvp=lambda p, t, out: None if t[0] is None else _sum2(swap(apply("inv", p[0])) * t[0]),
    vjp=lambda p, out, ct: [_expand2(ct) * swap(apply("inv", p[0]))],
    taylor=lambda p, s, out, jet: _logabsdet_taylor(p[0], s[0], jet), sparsity=MATRIX, sample=SQUARE,
))
register(Primitive(
    "slogdet_sign", _det_shape, template="np.linalg.slogdet({0})[0]",
    jvp=lambda p, t, out: None, vjp=lambda p, out, ct: [None], taylor=constant, sparsity=("zero", ()),
    sample=SQUARE, doc="the sign of det: piecewise constant, derivative 0",
))


def _solve_shape(a, b):
    sa, sb = _square_shape(a)[0], b[0]
    if len(sb) < 2 or sb[-2] != sa[-1]:
        raise ShapeError(f"solve: shapes {list(sa)} and {list(sb)} are not aligned", shapes=[list(sa), list(sb)])
    return broadcast_shapes(sa[:-2], sb[:-2]) + sb[-2:], FLOAT


def _solve_jvp(p, t, out):
    a, _ = p
    ta, tb = t
    if ta is None and tb is None:
        return None
    rhs = tb if ta is None else (-(ta @ out) if tb is None else tb - ta @ out)
    return apply("solve", a, rhs)


def _solve_vjp(p, out, ct):
    gb = apply("solve", swap(p[0]), ct)
    return [-(gb @ swap(out)), gb]


def _solve_taylor(p, s, out, jet):
    """Linear in B for a constant A; else A_0 X_k = B_k - Σ_{j=1..k} A_j X_{k-j} (taylor_solve)."""
    (a, _), (sa, sb) = p, s
    if sa is None:
        return apply("solve", a, sb)
    return apply("taylor_solve", a, sa, 0.0 if sb is None else sb, out)


register(Primitive("solve", _solve_shape, template="np.linalg.solve({0}, {1})",
                   jvp=_solve_jvp, vjp=_solve_vjp, taylor=_solve_taylor, broadcasting=True,
                   sparsity=("solve", ((0, 0), (0, 1))),
                   sample=[case(("invertible", a), b) for a, b in [((3, 3), (3, 2)), ((2, 3, 3), (3, 1)),
                                                                   ((2, 2), (2, 2, 2))]]))


def _phi(x):
    n = x.shape[-1]
    return x * (nullary(x, "tril_ones", n=n) - 0.5 * nullary(x, "eye", n=n))


def _cholesky_jvp(p, t, out):
    if t[0] is None:
        return None
    left = apply("solve", out, t[0])
    s = swap(apply("solve", out, swap(left)))
    return out @ _phi(0.5 * (s + swap(s)))


def _cholesky_vjp(p, out, ct):
    lt = swap(out)
    q = apply("solve", lt, _phi(lt @ ct))
    r = swap(apply("solve", lt, swap(q)))
    return [0.5 * (r + swap(r))]


register(Primitive(
    "cholesky", _square_shape, template="np.linalg.cholesky(0.5 * ({0} + np.swapaxes({0}, -1, -2)))",
    jvp=_cholesky_jvp, vjp=_cholesky_vjp, taylor=lambda p, s, out, jet: apply("taylor_cholesky", s[0], out),
    sparsity=MATRIX, sample=[case(("spd", s)) for s in [(3, 3), (2, 2, 2)]], dsl=of_square("cholesky"),
))


# ---------------------------------------------------------------- Taylor rules
# (the recurrences taylor_inv, taylor_solve, taylor_cholesky are in taylor_kernels.py)


def _logabsdet_taylor(a, sa, jet):
    """d log|det A| = <S, dA>, S = inv(A)ᵀ: L_k = (1/k) Σ_{j=1..k} j <A_j, S_{k-j}>."""
    s = swap(apply("inv", a))
    return _sum2(apply("taylor_integrate", sa, s, jet.series(s)))
