"""Linear algebra on the last two (core) axes, with any leading stack axes.

``matmul`` takes operands of rank >= 2 (the DSL reshapes vectors), so that a
batched tangent is just one more stack axis. Rules (standard, e.g. Giles 2008,
"Collected matrix derivative results"), with X = inv(A), S = swap(X):

    inv:      dX = -X dA X                    Ā = -S X̄ S
    det:      d det = <adj(A)ᵀ, dA>           Ā = ct * adj(A)ᵀ   (adj = det · inv, also at singular A)
    logabsdet d = <S, dA>                     Ā = ct * S
    solve:    dX = solve(A, dB - dA X)        B̄ = solve(Aᵀ, X̄), Ā = -B̄ Xᵀ
    cholesky: dL = L Φ(L⁻¹ dA L⁻ᵀ)            Ā = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹)

where Φ keeps the lower triangle and halves the diagonal. ``cholesky(A)`` is the
factor of the symmetric part ½(A + Aᵀ), so its derivative is defined for every
entry of A and agrees with finite differences.

Further down: the decompositions ``eigh svd qr`` (tuple-valued, their elements read by
``loop_get``; eigenvector and singular-vector derivatives weighted by ``spectral_gaps``, which
refuses repeated spectra), ``pinv``, the matrix functions ``expm sqrtm logm`` by block
matrices, and the language's calls built from these (``eigvalsh lstsq solve_triangular
matrix_power multi_dot norm``).
"""

from __future__ import annotations

import math

import numpy as np

from derivd.errors import ShapeError
from derivd.ops.evaluate import literal
from derivd.ops.registry import (
    FLAG, FLOAT, Param, Primitive, apply, broadcast_shapes, case, nullary, register,
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


# A stack of vectors against one shared matrix is this much work or more (entries of the stack times the
# matrix's) before it is written as one matrix product: below, the two reshapes cost more than they save.
STACKED_MIN_WORK = 4096


def _matmul_template(args, params, avals):
    """``a @ b``, except a stack of vectors times one matrix, which numpy runs as one matrix-vector
    product per entry of the stack (a batched tangent of ``X @ w``: ``X`` (1000, 20) times 20 directions
    (20, 20, 1), 66 µs): written as the one matrix product it is (``W @ X.T``: 29 µs), the stack folded
    into the rows of the operand that has it."""
    (sa, _), (sb, _) = avals
    if len(sa) == 2 and len(sb) >= 3 and sb[-1] == 1:  # one matrix, a stack of columns: a @ b[i]
        stack = math.prod(sb[:-2])
        if stack * math.prod(sa) >= STACKED_MIN_WORK:
            out = literal(tuple(sb[:-2]) + (sa[0], 1))
            return f"np.reshape(np.reshape({args[1]}, {literal((stack, sb[-2]))}) @ np.transpose({args[0]}), {out})"
    if len(sb) == 2 and len(sa) >= 3 and sa[-2] == 1:  # a stack of rows, one matrix: a[i] @ b
        stack = math.prod(sa[:-2])
        if stack * math.prod(sb) >= STACKED_MIN_WORK:
            out = literal(tuple(sa[:-2]) + (1, sb[-1]))
            return f"np.reshape(np.reshape({args[0]}, {literal((stack, sa[-1]))}) @ {args[1]}, {out})"
    return f"({args[0]} @ {args[1]})"


register(Primitive("matmul", _matmul_shape, template=_matmul_template, jvp=_matmul_jvp,
                   vjp=lambda p, out, ct: [ct @ swap(p[1]), swap(p[0]) @ ct], taylor=bilinear, broadcasting=True,
                   sparsity=("matmul", ((0, 1),)),
                   sample=[case(a, b) for a, b in [((2, 3), (3, 4)), ((3, 3), (3, 1)), ((2, 2, 3), (3, 2)),
                                                   ((2, 3), (2, 3, 2))]],
                   dsl={"multi_dot": lambda *a, **k: _multi_dot_call(*a, **k),
                        "matrix_power": lambda *a, **k: _matrix_power_call(*a, **k)}))


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
def _adjugate(a, np=np):
    """adj(A) = det(Vt) Vtᵀ diag(Π_{j≠i} s_j) det(U) Uᵀ from A = U S Vt: exact at a singular A too
    (the products skip s_i without dividing by it). ``np``: numpy, or jax.numpy for tier 2."""
    u, s, vt = np.linalg.svd(a)
    n = s.shape[-1]
    ones = np.ones(s.shape[:-1] + (1,))
    left = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, s[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    sign = (np.linalg.det(u) * np.linalg.det(vt))[..., None, None]
    others = (left * right)[..., None, :] if n else s[..., None, :]
    return sign * (np.swapaxes(vt, -1, -2) * others) @ np.swapaxes(u, -1, -2)


def _adjugate_jvp(p, t, out):
    """adj = det · inv away from singular matrices: d adj = tr(inv dA) adj - adj dA inv (a 422 at an
    exactly singular matrix: the second derivative of det there is not computed)."""
    if t[0] is None:
        return None
    x = apply("inv", p[0])
    return _expand2(_sum2(swap(x) * t[0])) * out - out @ t[0] @ x


def _adjugate_vjp(p, out, ct):
    xt = swap(apply("inv", p[0]))
    return [_expand2(_sum2(ct * out)) * xt - swap(out) @ ct @ xt]


register(Primitive(
    "adjugate", _square_shape, impl=_adjugate, xla=lambda jx, a: _adjugate(a, jx.np), jvp=_adjugate_jvp,
    vjp=_adjugate_vjp,
    taylor=lambda p, s, out, jet: jet.series(_expand2(apply("det", p[0])) * apply("inv", p[0])),
    sparsity=MATRIX, sample=SQUARE, doc="adj(A), det(A) inv(A) where A is invertible: det's gradient (transposed), "
    "also at a singular A",
))
register(Primitive(
    "det", _det_shape, template="np.linalg.det({0})",
    jvp=lambda p, t, out: None if t[0] is None else _sum2(swap(apply("adjugate", p[0])) * t[0]),
    vjp=lambda p, out, ct: [_expand2(ct) * swap(apply("adjugate", p[0]))],
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
                   dsl={"solve_triangular": lambda *a, **k: _solve_triangular_call(*a, **k)},
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


# ---------------------------------------------------------------- tuple-valued decompositions
#
# eigh, svd and qr are tuple-valued (ops/registry.py, "Rule interface"): one node holds the
# factorisation, and ``loop_get`` nodes read its elements, so the rules of one element reuse the
# others. Their Taylor rules are recurrences order by order (ops/decomposition_series.py).

SERIES = "derivd.ops.decomposition_series:"  # the Taylor rules' module (it reads this one's helpers)
DEGENERATE_RTOL = 1e-9  # two eigenvalues (squared singular values) closer than this times the largest are repeated


def element(t, index: int, shape: tuple[int, ...]):
    """Element ``index`` of the tuple-valued node ``t`` (of ``shape``)."""
    return apply("loop_get", t, index=index, aval=(tuple(shape), FLOAT))


def _row(x):
    """A (..., n) vector as a (..., 1, n) row: scales the columns of a matrix."""
    return apply("reshape", x, shape=x.shape[:-1] + (1, x.shape[-1]), in_ndim=len(x.shape))


def _col(x):
    return apply("reshape", x, shape=x.shape + (1,), in_ndim=len(x.shape))


def _diagonal(m):
    return apply("sum", m * nullary(m, "eye", n=m.shape[-1]), axes=(-1,))


def _gaps(w, nonzero: bool):
    """F_ij = 1/(w_j - w_i) off the diagonal, 0 on it: a LinAlgError (422) where two w are repeated."""
    return apply("spectral_gaps", w, nonzero=nonzero)


def _spectral_gaps(w, nonzero):
    w = np.asarray(w)
    d = w[..., None, :] - w[..., :, None]
    n = w.shape[-1]
    scale = np.max(np.abs(w), axis=-1, initial=0.0)[..., None, None]
    off = ~np.eye(n, dtype=bool)
    close = off & (np.abs(d) <= DEGENERATE_RTOL * scale)
    if np.any(close) or (nonzero and np.any(np.abs(w) <= DEGENERATE_RTOL * scale[..., 0])):
        raise np.linalg.LinAlgError(
            "the derivative of eigenvectors (singular vectors) is undefined where eigenvalues (singular values) "
            f"repeat{' or vanish' if nonzero else ''} (closer than {DEGENERATE_RTOL:g} times the largest); "
            "a function of the eigenvalues alone has one")
    with np.errstate(divide="ignore"):
        return np.where(off, 1.0 / np.where(off, d, 1.0), 0.0)


def _spectral_gaps_xla(jx, w, nonzero):
    np_ = jx.np
    d = w[..., None, :] - w[..., :, None]
    n = w.shape[-1]
    scale = np_.max(np_.abs(w), axis=-1, initial=0.0)[..., None, None]
    off = ~np_.eye(n, dtype=bool)
    close = np_.any(off & (np_.abs(d) <= DEGENERATE_RTOL * scale))
    if nonzero:
        close = close | np_.any(np_.abs(w) <= DEGENERATE_RTOL * scale[..., 0])
    jx.fail_if(close)  # tier 1 says which (a 422)
    return np_.where(off, 1.0 / np_.where(off, d, 1.0), 0.0)


def _gaps_jvp(p, t, out, nonzero):
    """dF_ij = -F_ij² (dw_j - dw_i)."""
    if t[0] is None:
        return None
    return -(out * out) * (_row(t[0]) - _col(t[0]))


def _gaps_vjp(p, out, ct, nonzero):
    h = -(out * out) * ct
    return [apply("sum", h, axes=(-2,)) - apply("sum", h, axes=(-1,))]


register(Primitive(
    "spectral_gaps", lambda w, nonzero: (w[0] + (w[0][-1],), FLOAT), impl=_spectral_gaps, xla=_spectral_gaps_xla,
    jvp=_gaps_jvp, vjp=_gaps_vjp, params={"nonzero": FLAG},
    sample=[case(("distinct", (3,), (-2.0, 2.0)), nonzero=False), case(("distinct", (2, 3), (0.5, 3.0)), nonzero=True)],
    doc=f"F_ij = 1/(w_j - w_i) off the diagonal: the eigenvector derivative's weights; a 422 where two w are "
        f"closer than {DEGENERATE_RTOL:g} times the largest |w| (and, nonzero=True, where one is that close to 0)",
))


def _tril_parts(n, like):
    lower = nullary(like, "tril_ones", n=n)
    eye = nullary(like, "eye", n=n)
    return lower - eye, eye


def _flat(x):
    return apply("reshape", x, shape=(x.size,), in_ndim=x.ndim)


def _column_outers(a, b):
    """a[..., :, j] ⊗ b[..., j, :] for every j, shape (..., m, k, n): the same when column j of a and
    row j of b change sign together, as numpy's vectors may from one point to the next."""
    sa, sb = a.shape, b.shape
    return (apply("reshape", a, shape=sa + (1,), in_ndim=len(sa))
            * apply("reshape", b, shape=sb[:-2] + (1,) + sb[-2:], in_ndim=len(sb)))


def _eigh_view(t):
    w, v = eigh_parts(t)
    return apply("concat", _flat(w), _flat(_column_outers(v, swap(v))), axis=-1)


def _svd_view(t):
    u, s, vt = svd_parts(t)
    return apply("concat", _flat(s), _flat(_column_outers(u, vt)), axis=-1)


def _qr_view(t):
    """Q and R with R's diagonal made positive: the QR that is smooth wherever A has full rank."""
    q, r = qr_parts(t)
    d = apply("sign", _diagonal(_columns(r, 0, r.shape[-2])))
    return apply("concat", _flat(q * _row(d)), _flat(r * _col(d)), axis=-1)


def _lower_symmetric(d):
    """The symmetric matrix eigh reads from ``d``: its lower triangle, mirrored."""
    strict, eye = _tril_parts(d.shape[-1], d)
    return d * (strict + eye) + swap(d * strict)


def _lower_gradient(g):
    """The cotangent of A given G, the one of the symmetric matrix read from A's lower triangle."""
    strict, eye = _tril_parts(g.shape[-1], g)
    return g * eye + (g + swap(g)) * strict


def _eigh_shape(a):
    _square_shape(a)
    return (), FLOAT


def eigh_parts(t):
    """(w, V) of an eigh node."""
    s = t.inputs[0].shape
    return element(t, 0, s[:-1]), element(t, 1, s)


def _eigh_jvp(p, t, out):
    if t[0] is None:
        return None
    w, v = eigh_parts(out)
    m = swap(v) @ _lower_symmetric(t[0]) @ v
    return {0: _diagonal(m), 1: v @ (_gaps(w, False) * m)}


def _eigh_vjp(p, out, ct):
    w, v = eigh_parts(out)
    inner = None
    if ct.get(0) is not None:
        inner = _row(ct[0]) * nullary(w, "eye", n=w.shape[-1])
    if ct.get(1) is not None:
        term = _gaps(w, False) * (swap(v) @ ct[1])
        inner = term if inner is None else inner + term
    return [_lower_gradient(v @ inner @ swap(v))]


def _eigh_xla(jx, a):
    """numpy's eigh reads A's lower triangle only; jax's, by default, the mean of A and Aᵀ (a
    different matrix wherever A is not symmetric: other eigenvalues, on tier 2 alone)."""
    return jx.np.linalg.eigh(a, UPLO="L", symmetrize_input=False)


register(Primitive(
    "eigh", _eigh_shape, template="np.linalg.eigh({0})", xla=_eigh_xla, jvp=_eigh_jvp, vjp=_eigh_vjp, tuple_valued=True,
    taylor=SERIES + "eigh_taylor", view=_eigh_view,
    sample=[case(("symmetric", (3, 3), (-2.0, 2.0))), case(("symmetric", (2, 3, 3), (0.5, 6.0)))],
    dsl={"eigh": lambda *a, **k: _eigh_call(*a, **k), "eigvalsh": lambda *a, **k: _eigvalsh_call(*a, **k)},
    doc="(w, V), numpy's eigh of the symmetric matrix in A's lower triangle (A's upper triangle is not read: "
        "its derivative is 0); the eigenvector derivative is a 422 at a repeated eigenvalue; Taylor to any order "
        "(the eigenvalues' first coefficient also at a repeated eigenvalue)",
))


def svd_parts(t):
    s = t.inputs[0].shape
    m, n = s[-2:]
    k = min(m, n)
    return element(t, 0, s[:-2] + (m, k)), element(t, 1, s[:-2] + (k,)), element(t, 2, s[:-2] + (k, n))


def _svd_jvp(p, t, out):
    if t[0] is None:
        return None
    u, s, vt = svd_parts(out)
    v, da = swap(vt), t[0]
    m, n = u.shape[-2], vt.shape[-1]
    dp = swap(u) @ da @ v
    f = _gaps(s * s, m != n)
    du = u @ (f * (dp * _row(s) + _col(s) * swap(dp)))
    dv = v @ (f * (_col(s) * dp + swap(dp) * _row(s)))
    if m > n:
        du = du + (da @ v - u @ dp) / _row(s)
    if m < n:
        dv = dv + (swap(da) @ u - v @ swap(dp)) / _row(s)
    return {0: du, 1: _diagonal(dp), 2: swap(dv)}


def _svd_vjp(p, out, ct):
    u, s, vt = svd_parts(out)
    v = swap(vt)
    m, n = u.shape[-2], vt.shape[-1]
    gu, gs, gvt = ct.get(0), ct.get(1), ct.get(2)
    inner = None
    if gs is not None:
        inner = _row(gs) * nullary(s, "eye", n=s.shape[-1])
    if gu is not None or gvt is not None:
        f = _gaps(s * s, m != n)
        for g, left in ((gu, u), (None if gvt is None else swap(gvt), v)):
            if g is None:
                continue
            a = swap(left) @ g
            term = (f * (a - swap(a))) * _row(s) if left is u else _col(s) * (f * (a - swap(a)))
            inner = term if inner is None else inner + term
    grad = u @ inner @ vt
    if m > n and gu is not None:
        grad = grad + ((gu - u @ (swap(u) @ gu)) / _row(s)) @ vt
    if m < n and gvt is not None:
        gv = swap(gvt)
        grad = grad + u @ swap((gv - v @ (swap(v) @ gv)) / _row(s))
    return [grad]


def _matrix_shape(name):
    def shape(a, **_):
        if len(a[0]) < 2:
            raise ShapeError(f"{name}() takes a matrix (or a stack of them), got shape {list(a[0])}", shape=list(a[0]))
        return (), FLOAT
    return shape


register(Primitive(
    "svd", _matrix_shape("svd"), template="np.linalg.svd({0}, full_matrices=False)",
    jvp=_svd_jvp, vjp=_svd_vjp, tuple_valued=True, taylor=SERIES + "svd_taylor", view=_svd_view,
    sample=[case(("spread", s, (1.0, 4.0))) for s in [(3, 3), (3, 2), (2, 3), (2, 2, 3)]],  # gaps >= 0.375
    dsl={"svd": lambda *a, **k: _svd_call(*a, **k), "norm": lambda *a, **k: _norm_call(*a, **k)},
    doc="(U, s, Vt) of the thin SVD (full_matrices=False); the singular vectors' derivative is a 422 at a "
        "repeated singular value (or, for a non-square matrix, a zero one); Taylor to any order (the singular values' "
        "first coefficient also at a repeated one, the second and above where none repeats or vanishes)",
))


def _right_solve(b, r):
    """b R⁻¹."""
    return swap(apply("solve", swap(r), swap(b)))


def _copyltu(m):
    """The symmetric matrix with m's lower triangle (diagonal included)."""
    strict, eye = _tril_parts(m.shape[-1], m)
    return m * (strict + eye) + swap(m * strict)


def qr_parts(t):
    s = t.inputs[0].shape
    m, n = s[-2:]
    k = min(m, n)
    return element(t, 0, s[:-2] + (m, k)), element(t, 1, s[:-2] + (k, n))


def _qr_tall_jvp(q, r, da):
    """m >= n: X = Qᵀ dA R⁻¹, Ω = tril(X, -1) - its transpose, dR = (X - Ω) R, dQ = dA R⁻¹ - Q (X - Ω)."""
    strict, _ = _tril_parts(r.shape[-1], r)
    dar = _right_solve(da, r)
    x = swap(q) @ dar
    low = x * strict
    rest = x - (low - swap(low))
    return dar - q @ rest, rest @ r


def _qr_tall_vjp(q, r, gq, gr):
    """m >= n: M = R R̄ᵀ - Q̄ᵀ Q, Ā = (Q̄ + Q copyltu(M)) R⁻ᵀ (absent cotangents are zero)."""
    m = None
    if gr is not None:
        m = r @ swap(gr)
    if gq is not None:
        m = -(swap(gq) @ q) if m is None else m - swap(gq) @ q
    b = q @ _copyltu(m)
    if gq is not None:
        b = gq + b
    return swap(apply("solve", r, swap(b)))


def _qr_jvp(p, t, out):
    if t[0] is None:
        return None
    q, r = qr_parts(out)
    m, n = q.shape[-2], r.shape[-1]
    if m >= n:
        dq, dr = _qr_tall_jvp(q, r, t[0])
        return {0: dq, 1: dr}
    # wide: A = [X | Y] with X square, Q U = X, R = [U | Qᵀ Y]
    a, da = p[0], t[0]
    u, y = _columns(r, 0, m), _columns(a, m, n)
    dq, du = _qr_tall_jvp(q, u, _columns(da, 0, m))
    dv = swap(dq) @ y + swap(q) @ _columns(da, m, n)
    return {0: dq, 1: apply("concat", du, dv, axis=-1)}


def _qr_vjp(p, out, ct):
    q, r = qr_parts(out)
    m, n = q.shape[-2], r.shape[-1]
    gq, gr = ct.get(0), ct.get(1)
    if m >= n:
        return [_qr_tall_vjp(q, r, gq, gr)]
    a = p[0]
    u, y = _columns(r, 0, m), _columns(a, m, n)
    gu = None if gr is None else _columns(gr, 0, m)
    gv = None if gr is None else _columns(gr, m, n)
    if gv is not None:
        extra = y @ swap(gv)
        gq = extra if gq is None else gq + extra
    gx = _qr_tall_vjp(q, u, gq, gu)
    gy = q @ gv if gv is not None else 0.0 * _columns(a, m, n)
    return [apply("concat", gx, gy, axis=-1)]


def _columns(x, start, stop):
    return apply("index", x, items=tuple((0, d, 1) for d in x.shape[:-1]) + ((start, stop, 1),))


register(Primitive(
    "qr", _matrix_shape("qr"), template="np.linalg.qr({0})", jvp=_qr_jvp, vjp=_qr_vjp, tuple_valued=True,
    taylor=SERIES + "qr_taylor", view=_qr_view,
    sample=[case(("spread", s, (0.5, 2.0))) for s in [(3, 3), (3, 2), (2, 3), (2, 3, 2)]],
    dsl={"qr": lambda *a, **k: _qr_call(*a, **k)},
    doc="(Q, R), numpy's reduced QR (R's diagonal as LAPACK signs it); derivatives and Taylor to any order "
        "where the leading square block is invertible",
))


# ---------------------------------------------------------------- matrix functions
#
# expm, sqrtm, logm are primary matrix functions f, and for them (Higham, "Functions of Matrices",
# 2008, §3.2 and Thm 4.? on block triangular Toeplitz matrices) f of a block upper triangular
# Toeplitz matrix built from A_0, A_1, ..., A_K is block Toeplitz with blocks the Taylor
# coefficients of f(A(t)). So the Fréchet derivative L(A, E) is the upper right block of
# f([[A, E], [0, A]]), its adjoint is L(Aᵀ, ·), the second derivative L2(A, E, D) is block (1, 4)
# of f([[A, E, D, 0], [0, A, 0, D], [0, 0, A, E], [0, 0, 0, A]]) (Higham & Relton 2014), and the
# Taylor series of f(A(t)) is the first block row of f of the Toeplitz matrix. Exact up to rounding
# for every A where f is defined; the perturbation blocks are scaled to A's size first.

MATFUNS = {"expm": "expm", "sqrtm": "sqrtm", "logm": "logm"}


def _apply_matfun(f, x):
    import scipy.linalg as sla

    with np.errstate(all="ignore"):
        out = getattr(sla, f)(x)
    if np.iscomplexobj(out):  # a real matrix with no real principal root or logarithm: nan
        bad = np.any(np.abs(out.imag) > 1e-10 * (1.0 + np.abs(out.real)), axis=(-2, -1), keepdims=True)
        out = np.where(bad, np.nan, out.real)
    return out


def _blocks(np_, a, parts, layout):
    """The block matrix of ``layout`` (rows of indices into ``parts``, -1: A, None: 0), built without
    writing into an array so that ``np_`` may be numpy or jax.numpy."""
    shape = np_.broadcast_shapes(a.shape, *[np_.shape(p) for p in parts])

    def block(which):
        return np_.zeros(shape) if which is None else np_.broadcast_to(a if which == -1 else parts[which], shape)

    return np_.concatenate([np_.concatenate([block(w) for w in row], axis=-1) for row in layout], axis=-2)


def _scaled(np_, a, parts):
    """Scale factors making each perturbation's size that of A (exactness does not depend on it;
    rounding does)."""
    big = np_.maximum(np_.max(np_.abs(a), initial=0.0), 1e-300)
    return [big / np_.maximum(np_.max(np_.abs(p), initial=0.0), 1e-300) for p in parts]


# Each of the three below runs on tier 1 as it stands (numpy, scipy's matrix functions) and on tier 2
# with jax.numpy and the matrix functions built below (``_on_tier2``).

def _frechet(a, e, f, np_=np, matfun=_apply_matfun):
    n = a.shape[-1]
    (c,) = _scaled(np_, a, [e])
    return matfun(f, _blocks(np_, a, [e * c], [[-1, 0], [None, -1]]))[..., :n, n:] / c


def _frechet2(a, e, d, f, np_=np, matfun=_apply_matfun):
    n = a.shape[-1]
    c1, c2 = _scaled(np_, a, [e, d])
    x = _blocks(np_, a, [e * c1, d * c2], [[-1, 0, 1, None], [None, -1, None, 1], [None, None, -1, 0],
                                           [None, None, None, -1]])
    return matfun(f, x)[..., :n, 3 * n:] / (c1 * c2)


def _taylor_matfun(a0, series, f, np_=np, matfun=_apply_matfun):
    K, n = len(series), a0.shape[-1]
    (c,) = _scaled(np_, a0, [series])
    parts = [series[k] * c ** (k + 1) for k in range(K)]
    layout = [[-1 if j == i else (j - i - 1 if j > i else None) for j in range(K + 1)] for i in range(K + 1)]
    out = matfun(f, _blocks(np_, a0, parts, layout))
    return np_.stack([out[..., :n, (k + 1) * n:(k + 2) * n] / c ** (k + 1) for k in range(K)])


FUNCTION = Param("a matrix function (expm, sqrtm, logm)", lambda v: v in MATFUNS)


def _frechet_jvp(p, t, out, f):
    (a, e), (ta, te) = p, t
    terms = [None if te is None else apply("frechet", a, te, f=f),
             None if ta is None else apply("frechet2", a, e, ta, f=f)]
    terms = [x for x in terms if x is not None]
    return None if not terms else terms[0] if len(terms) == 1 else terms[0] + terms[1]


def _frechet_vjp(p, out, ct, f):
    a, e = p
    return [apply("frechet2", swap(a), swap(e), ct, f=f) if p.varies[0] else None,
            apply("frechet", swap(a), ct, f=f)]


def _pair_shape(a, e, **_):
    return broadcast_shapes(a[0], e[0]), FLOAT


# Tier 2 (compile/xla.py): the same block matrices in jax. jax's expm serves; jax's sqrtm needs a
# Schur form only its CPU backend has, and it has no logm, so both are built here from inverses and
# solves, which every platform has: the square root by the scaled Denman-Beavers iteration (product
# form, Higham 2008 §6.3), which converges to the principal root wherever one is real; the logarithm
# by inverse scaling and squaring (§11.5): square roots until ‖A - I‖₁ <= 1/4, then the [8/8] Padé
# approximant of log(I + X) as Gauss-Legendre quadrature of X (I + tX)⁻¹ over t in [0, 1]. Where the
# root is not real the iteration does not converge: a lowering check then lets tier 1 answer (nan).
# Both agree with scipy's Schur methods to about 1e-14 relative on the sweep's matrices.

ROOT_STEPS = 60  # Denman-Beavers iterations before a root is declared not real (converged ones take ~10)
LOG_ROOTS = 64  # square roots taken at most before the logarithm's Padé approximant


def _root_xla(jx, a):
    """(sqrtm(a), whether the iteration converged). M_{k+1} = (I + (μ²M + μ⁻²M⁻¹)/2)/2, Y_{k+1} =
    μ Y (I + μ⁻²M⁻¹)/2 from M = Y = A, μ = |det M|^(-1/2n): Y → A^½ as M → I; two steps after
    ‖M - I‖ <= 1e-7 reach rounding (the convergence is quadratic)."""
    np_, lax = jx.np, jx.lax
    n = a.shape[-1]
    eye = np_.eye(n)

    def far(m):
        return np_.max(np_.abs(m - eye), initial=0.0)

    def step(state):
        k, m, y = state
        mu = np_.exp(-np_.linalg.slogdet(m)[1] / (2 * n))[..., None, None]
        mi = np_.linalg.inv(m) / (mu * mu)
        return k + 1, 0.5 * (eye + 0.5 * (mu * mu * m + mi)), 0.5 * mu * (y @ (eye + mi))

    state = lax.while_loop(lambda s: (s[0] < ROOT_STEPS) & (far(s[1]) > 1e-7), step, (np_.asarray(0), a, a))
    _, m, y = step(step(state))
    return y, far(m) <= 1e-10


def _sqrtm_xla(jx, a):
    y, converged = _root_xla(jx, a)
    jx.fail_if(~converged)  # no real principal root: tier 1 answers nan
    return y


def _logm_xla(jx, a):
    np_, lax = jx.np, jx.lax
    eye = np_.eye(a.shape[-1])

    def far(x):
        return np_.max(np_.sum(np_.abs(x - eye), axis=-2), initial=0.0)

    def root(state):
        s, x, ok = state
        y, converged = _root_xla(jx, x)
        return s + 1, y, ok & converged

    s, x, ok = lax.while_loop(lambda st: (st[0] < LOG_ROOTS) & st[2] & (far(st[1]) > 0.25), root,
                              (np_.asarray(0), a, np_.asarray(True)))
    jx.fail_if(~ok | (far(x) > 0.25))  # no real principal logarithm: tier 1 answers nan
    nodes, weights = np.polynomial.legendre.leggauss(8)
    x = x - eye
    pade = sum(0.5 * w * np_.linalg.solve(eye + 0.5 * (t + 1.0) * x, x) for t, w in zip(nodes, weights))
    return pade * 2.0 ** s.astype(np_.float64)


MATFUNS_XLA = {"expm": lambda jx, a: jx.linalg.expm(a), "sqrtm": _sqrtm_xla, "logm": _logm_xla}


def _on_tier2(function):
    """``function`` (one of the three above) on tier 2: jax.numpy, and the matrix functions here."""
    return lambda jx, *args, **params: function(*args, **params, np_=jx.np,
                                                matfun=lambda f, x: MATFUNS_XLA[f](jx, x))


register(Primitive(
    "frechet", _pair_shape, impl=_frechet, xla=_on_tier2(_frechet), jvp=_frechet_jvp, vjp=_frechet_vjp,
    broadcasting=True,
    params={"f": FUNCTION}, tested_in="tests/ops/test_registry_sweep.py (the first and second order of expm, "
    "sqrtm, logm)", doc="L(A, E), the Fréchet derivative of the matrix function f at A in the direction E",
))
register(Primitive(
    "frechet2", lambda a, e, d, f: (broadcast_shapes(a[0], e[0], d[0]), FLOAT), impl=_frechet2,
    xla=_on_tier2(_frechet2),
    params={"f": FUNCTION}, tested_in="tests/ops/test_registry_sweep.py (the second order of expm, sqrtm, logm)",
    doc="L2(A, E, D), the second Fréchet derivative of f: a third derivative of a matrix function is refused",
))
register(Primitive("taylor_matfun", lambda a, s, f: (broadcast_shapes(s[0], (1,) + a[0]), FLOAT),
                   impl=_taylor_matfun, xla=_on_tier2(_taylor_matfun), params={"f": FUNCTION},
                   doc="(A_0, A series; f) -> series of the matrix function f(A)"))


def matfun(name, doc):
    register(Primitive(
        name, _square_shape, impl=lambda a, _f=name: _apply_matfun(_f, a), xla=MATFUNS_XLA[name],
        jvp=lambda p, t, out: None if t[0] is None else apply("frechet", p[0], t[0], f=name),
        vjp=lambda p, out, ct: [apply("frechet", swap(p[0]), ct, f=name)],
        taylor=lambda p, s, out, jet: apply("taylor_matfun", p[0], s[0], f=name), sparsity=MATRIX,
        sample=[case(("spd", (3, 3))), case(("spd", (2, 2, 2)))], dsl=of_square(name), doc=doc,
    ))


matfun("expm", "the matrix exponential (scipy.linalg.expm)")
matfun("sqrtm", "the principal square root (scipy.linalg.sqrtm); nan where it is not real")
matfun("logm", "the principal logarithm (scipy.linalg.logm); nan where it is not real")


# ---------------------------------------------------------------- pseudo-inverse


def _eye_like(x, n):
    return nullary(x, "eye", n=n)


def _pinv_jvp(p, t, out):
    """Constant rank (Golub & Pereyra 1973): dP = -P dA P + P Pᵀ dAᵀ (I - A P) + (I - P A) dAᵀ Pᵀ P."""
    if t[0] is None:
        return None
    a, pa, da = p[0], out, t[0]
    m, n = a.shape[-2:]
    dat = swap(da)
    return (-(pa @ da @ pa) + pa @ swap(pa) @ dat @ (_eye_like(a, m) - a @ pa)
            + (_eye_like(a, n) - pa @ a) @ dat @ swap(pa) @ pa)


def _pinv_vjp(p, out, ct):
    """Ā = -Pᵀ Ḡ Pᵀ + (I - A P) Ḡᵀ P Pᵀ + Pᵀ P Ḡᵀ (I - P A)."""
    a, pa = p[0], out
    m, n = a.shape[-2:]
    gt, pt = swap(ct), swap(pa)
    return [-(pt @ ct @ pt) + (_eye_like(a, m) - a @ pa) @ gt @ pa @ pt
            + pt @ pa @ gt @ (_eye_like(a, n) - pa @ a)]


def _pinv_taylor(p, s, out, jet):
    """Full rank: P = (AᵀA)⁻¹Aᵀ (m >= n) or Aᵀ(AAᵀ)⁻¹ (m < n), series by composition."""
    a = p[0]
    m, n = a.shape[-2:]
    at = swap(a)
    build = apply("solve", at @ a, at) if m >= n else swap(apply("solve", a @ at, a))
    return jet.series(build)


def _pinv_shape(a):
    s = a[0]
    if len(s) < 2:
        raise ShapeError(f"pinv() takes a matrix (or a stack of them), got shape {list(s)}", shape=list(s))
    return s[:-2] + (s[-1], s[-2]), FLOAT


# ---------------------------------------------------------------- language calls


def _refuse(message):
    from derivd.errors import ProgramError

    raise ProgramError(message, code="bad_arguments")


def _matrix_arg(lib, name, a):
    a = lib.as_float(a)
    if a.ndim < 2:
        raise ShapeError(f"{name}() takes a matrix (or a stack of them), got shape {list(a.shape)}",
                         shape=list(a.shape))
    return a


def _eigh_call(lib, a, UPLO="L"):
    a = lib.square("eigh", a)
    if UPLO not in ("L", "U"):
        _refuse(f"eigh(UPLO=...) is 'L' or 'U', not {UPLO!r}")
    return eigh_parts(apply("eigh", a if UPLO == "L" else swap(a)))


def _eigvalsh_call(lib, a, UPLO="L"):
    return _eigh_call(lib, a, UPLO)[0]


def _svd_call(lib, a, full_matrices=True, compute_uv=True, hermitian=False):
    a = _matrix_arg(lib, "svd", a)
    if hermitian:
        _refuse("svd(hermitian=True) is not supported: use eigh")
    parts = svd_parts(apply("svd", a))
    if not compute_uv:
        return parts[1]
    if full_matrices and a.shape[-1] != a.shape[-2]:
        _refuse("svd() of a non-square matrix answers the thin factors only: pass full_matrices=False")
    return parts


def _qr_call(lib, a, mode="reduced"):
    a = _matrix_arg(lib, "qr", a)
    if mode == "complete" and a.shape[-2] > a.shape[-1]:
        _refuse("qr(mode='complete') of a tall matrix is not supported: use mode='reduced'")
    if mode not in ("reduced", "complete", "r"):
        _refuse(f"qr(mode=...) is 'reduced', 'complete' or 'r', not {mode!r}")
    q, r = qr_parts(apply("qr", a))
    return r if mode == "r" else (q, r)


def _solve_triangular_call(lib, a, b, trans=0, lower=False, unit_diagonal=False):
    """A solve with the other triangle masked away (and the diagonal set to 1 for unit_diagonal):
    the same value as scipy's, and a derivative 0 in the entries it does not read."""
    a = lib.square("solve_triangular", a)
    n = a.shape[-1]
    tri = nullary(a, "tril_ones", n=n)
    if not lower:
        tri = swap(tri)
    if unit_diagonal:
        eye = nullary(a, "eye", n=n)
        a = a * (tri - eye) + eye
    else:
        a = a * tri
    if trans in (1, "T", "C"):
        a = swap(a)
    elif trans not in (0, "N"):
        _refuse(f"solve_triangular(trans=...) is 0, 1, 'N' or 'T', not {trans!r}")
    return lib.f_solve(a, b)


def _pinv_call(lib, a):
    return apply("pinv", _matrix_arg(lib, "pinv", a))


def _lstsq_call(lib, a, b, rcond=None):
    """numpy's (x, residuals, rank, s) for a full-rank A: x = pinv(A) b; residuals the squared
    norms of A x - b per column when A is tall (else empty); rank min(m, n)."""
    a, b = lib.as_float(a), lib.as_float(b)
    if a.ndim != 2 or b.ndim not in (1, 2) or b.shape[0] != a.shape[0]:
        raise ShapeError(f"lstsq: shapes {list(a.shape)} and {list(b.shape)} are not aligned",
                         shapes=[list(a.shape), list(b.shape)])
    m, n = a.shape
    x = lib.f_matmul(apply("pinv", a), b)
    if m > n:
        r = lib.f_matmul(a, x) - b
        residuals = apply("sum", r * r, axes=(0 - r.ndim,))
        residuals = lib.reshape_to(residuals, (1,)) if b.ndim == 1 else residuals
    else:
        residuals = a.graph.apply("zeros", (), {"shape": (0,)})
    return x, residuals, min(m, n), svd_parts(apply("svd", a))[1]


def _matrix_power_call(lib, a, n):
    """By repeated squaring; a negative power of the inverse; 0: the identity."""
    a = lib.square("matrix_power", a)
    n = lib.lo.static_int(n, "matrix_power's n")
    if n < 0:
        a, n = apply("inv", a), -n
    out = None
    while n:
        if n & 1:
            out = a if out is None else out @ a
        n >>= 1
        if n:
            a = a @ a
    if out is None:
        eye = nullary(a, "eye", n=a.shape[-1])
        return eye if a.ndim == 2 else apply("broadcast_to", eye, shape=a.shape, in_ndim=2)
    return out


def _multi_dot_call(lib, arrays):
    if not isinstance(arrays, (list, tuple)) or len(arrays) < 2:
        _refuse("multi_dot() takes a list of at least two arrays")
    out = arrays[0]
    for x in arrays[1:]:
        out = lib.f_matmul(out, x)
    return out


def _pinv_xla(jx, a):
    """numpy's cutoff for a zero singular value: 1e-15 times the largest; jax's default is 10 max(m, n)
    eps (6.7e-15 for 3 x 3): between the two, numpy inverts a singular value jax drops."""
    return jx.np.linalg.pinv(a, rtol=1e-15)


register(Primitive(
    "pinv", _pinv_shape, template="np.linalg.pinv({0})", xla=_pinv_xla, jvp=_pinv_jvp, vjp=_pinv_vjp,
    taylor=_pinv_taylor,
    sparsity=MATRIX, sample=[case(("spread", (3, 2), (0.5, 2.0))), case(("spread", (2, 3), (0.5, 2.0))),
                             case(("invertible", (2, 2, 2)))],
    dsl={"pinv": _pinv_call, "lstsq": _lstsq_call},
    doc="the Moore-Penrose pseudo-inverse; derivatives where the rank is locally constant (full rank for the "
        "Taylor rule)",
))


def _norm_call(lib, x, ord=None, axis=None, keepdims=False):
    """numpy.linalg.norm: the 2-norm of everything (ord None, axis None), a vector norm along one
    axis (ord 2, 1, inf, -inf, 0, any p), or a matrix norm over two ('fro', 'nuc', 2, -2, 1, -1,
    inf, -inf); all compositions, so ties of max/min split their derivative (reductions' convention)
    and the 2-norm's gradient at 0 is 0."""
    x = lib.as_float(x)
    if axis is None:
        if ord is not None and x.ndim not in (1, 2):
            raise ShapeError(f"norm(ord=...) without axis takes a vector or a matrix, got shape {list(x.shape)}",
                             shape=list(x.shape))
        given = tuple(range(x.ndim)) if ord is not None else None
    else:
        given = axis if isinstance(axis, tuple) else (axis,)
    axes = lib.axes(x, given)
    pair = tuple(a % x.ndim - x.ndim for a in (given or ()) if isinstance(a, int))
    if ord is None or (ord == "fro" and len(axes) == 2) or (ord == 2 and len(axes) == 1):
        out = apply("norm2", x, axes=axes)
    elif len(axes) == 1:
        out = _vector_norm(x, ord, axes)
    elif len(axes) == 2:
        out = _matrix_norm(lib, x, ord, pair)
    else:
        raise ShapeError(f"norm(ord={ord!r}) takes one axis or two, not {len(axes)}")
    if keepdims:
        out = lib.reshape_to(out, tuple(1 if i - x.ndim in axes else d for i, d in enumerate(x.shape)))
    return out


def _vector_norm(x, ord, axes):
    a = apply("abs", x)
    if ord == math.inf:
        return apply("max", a, axes=axes)
    if ord == -math.inf:
        return apply("min", a, axes=axes)
    if ord == 0:
        return apply("sum", apply("to_float", apply("ne", x, 0.0)), axes=axes)
    if isinstance(ord, bool) or not isinstance(ord, (int, float)):
        _refuse(f"norm(ord=...) of a vector is a number, not {ord!r}")
    if ord == 1:
        return apply("sum", a, axes=axes)
    return apply("pow", apply("sum", apply("pow", a, float(ord)), axes=axes), 1.0 / ord)


def _matrix_norm(lib, x, ord, pair):
    row, col = pair
    if ord in ("nuc", 2, -2):
        rest = [i for i in range(x.ndim) if i - x.ndim not in pair]
        moved = lib.f_transpose(x, tuple(rest) + (row % x.ndim, col % x.ndim))
        s = svd_parts(apply("svd", moved))[1]
        return apply({"nuc": "sum", 2: "max", -2: "min"}[ord], s, axes=(-1,))
    if ord not in (1, -1, math.inf, -math.inf):
        _refuse(f"norm(ord=...) of a matrix is 'fro', 'nuc', 1, -1, 2, -2, inf or -inf, not {ord!r}")
    summed, over = (row, col) if ord in (1, -1) else (col, row)
    sums = apply("sum", apply("abs", x), axes=(summed,))
    over = over + 1 if over < summed else over
    return apply("max" if ord > 0 else "min", sums, axes=(over,))
