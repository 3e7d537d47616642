"""Taylor kernels: the shapes Taylor rules take, and the coefficient recurrences they use.

The family modules give each primitive its Taylor rule (``taylor=``) where it is
registered; most are one of the shapes here (``linear``, ``bilinear``,
``integral``, ``composite``, ``constant``) or a call of one of the recurrences,
which are helper primitives (``taylor_*``) evaluated by numpy loops over the
coefficient index. transforms/taylor.py propagates the series through a graph.
"""

from __future__ import annotations

import numpy as np

from derivd.ops.evaluate import eval_primitive
from derivd.ops.registry import AXES, FLOAT, NUMBER, Param, Primitive, apply, broadcast_shapes, get, register

BILINEAR = ("mul", "mul0", "matmul")  # the primitives ``bilinear`` serves


# ---------------------------------------------------------------- rule shapes
#
# A Taylor rule is ``taylor(primals, series, out, jet, **params) -> node | None``.
# ``series[i]`` holds coefficients 1..K of input i as one node of shape
# ``(K, *batch, *shape_i)`` (None: a constant, all zero); coefficient 0 is the
# primal itself (``primals[i]``, ``out``). The rule returns coefficients 1..K of
# the output. ``jet.series(node)`` gives the series of any node built from the
# primals, propagated by these same rules (transforms/taylor.py), so a rule may
# be written as a composition. The shapes below cover most primitives; the
# recurrences themselves are the helper primitives (``taylor_*``) further down,
# with no rules of their own: differentiating a Taylor program is an error,
# never a silent zero.


def add_all(terms):
    """The sum of the nodes in ``terms`` that are not None (None if none is)."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


def linear(primals, series, out, jet, **params):
    """Linear and piecewise-linear primitives: the jvp rule applied to the stacked
    coefficients, which maps each coefficient on its own. At kinks (abs at 0,
    maximum's ties, ...) this is the jvp rule's one-sided convention, order by order."""
    return get(out.prim).rule("jvp")(primals, series, out, **params)


def constant(primals, series, out, jet, **params):
    """Piecewise-constant primitives (sign, floor, ...): coefficient 0 only."""
    return None


def bilinear(primals, series, out, jet, **params):
    """``c = B(a, b)`` with B bilinear (mul, matmul, mul0): c_k = Σ_{j=0..k} B(a_j, b_{k-j}).
    The two terms holding a coefficient 0 are nodes; the rest is the Cauchy
    convolution ``taylor_conv``."""
    (a, b), (sa, sb) = primals, series
    name = out.prim
    if a is b and name == "mul":  # x * x: the two first terms are one, twice
        return 2.0 * apply(name, sa, b) + apply("taylor_conv", sa, sa, prim=name)
    terms = [None if sa is None else apply(name, sa, b), None if sb is None else apply(name, a, sb)]
    if sa is not None and sb is not None:
        terms.append(apply("taylor_conv", sa, sb, prim=name))
    return add_all(terms)


def integral(primals, series, out, jet, **params):
    """Elementwise primitives whose partial derivatives depend on the inputs only
    (atan, asin, erf, atan2, ...). With h_i = ∂f/∂x_i (the jvp rule at a unit
    tangent), y' = Σ_i h_i x_i' gives y_k = (1/k) Σ_i Σ_{j=1..k} j x_{i,j} h_{i,k-j}
    (``taylor_integrate``), each h_i's own series coming from the jet."""
    jvp = get(out.prim).rule("jvp")
    terms = []
    for i, s in enumerate(series):
        if s is None:
            continue
        h = jvp(primals, [1.0 if j == i else None for j in range(len(primals))], out, **params)
        hs = jet.series(h)
        terms.append(s * h if hs is None else apply("taylor_integrate", s, h, hs))
    return add_all(terms)


def composite(build, vanish_at_zero=False):
    """A primitive equal to a composition of others, ``build(*primals, out, **params)``:
    its series is the composition's. ``vanish_at_zero``: the series is 0 where the
    output is 0 (hypot and norm at the origin, the jvp's convention)."""

    def rule(primals, series, out, jet, **params):
        s = jet.series(build(*primals, out, **params))
        if s is None or not vanish_at_zero:
            return s
        return apply("where", apply("eq", out, 0.0), 0.0, s)

    return rule


# ---------------------------------------------------------------- elementwise recurrences
#
# Helper primitives of the Taylor rules above and of elementwise.py's. A series is an array of coefficients
# 1..K on axis 0 (then any batch axes, then the value's own); coefficient 0 is the
# primal. With x the input's series and k = 1..K (Griewank & Walther, "Evaluating
# Derivatives", 2nd ed., 2008, ch. 13):
#
#   y' = x' (a + b y + c y²)   y_k = (1/k) Σ_{j=1..k} j x_j w_{k-j},   w = a + b y + c y²
#   y' = x' h, h known         y_k = (1/k) Σ_{j=1..k} j x_j h_{k-j}
#   y = log u                  y_k = (u_k - (1/k) Σ_{j=1..k-1} j y_j u_{k-j}) / u_0
#   y = u^r                    y_k = (1/(k u_0)) Σ_{j=0..k-1} (r (k-j) - j) u_{k-j} y_j
#   y = a / b                  y_k = (a_k - Σ_{j=1..k} b_j y_{k-j}) / b_0
#   s, c = sin u, cos u        s_k = (1/k) Σ_{j=1..k} j u_j c_{k-j},  c_k = ∓(1/k) Σ_{j=1..k} j u_j s_{k-j}
#   c = B(a, b), B bilinear    c_k = Σ_{j=0..k} B(a_j, b_{k-j})
#
# Each is a numpy loop over k whose inner sum is one vectorised contraction. An input
# of degree p (x_j = 0 for j > p: a line x + t v has p = 1) needs only the terms with
# j <= p (or k - j <= p) of each sum, so a function of the inputs costs O(K p), not O(K²).
# They have no derivative rules: differentiating a Taylor program is an error, not a zero.


def _dot(a, b):
    """Σ over axis 0 of a * b: the inner sum of a recurrence, without a (k, ...) temporary."""
    return np.einsum("i...,i...->...", a, b)


def _degree(series) -> int:
    """The index of the last nonzero coefficient of a series (0 if all are zero)."""
    nonzero = np.flatnonzero(np.any(series != 0, axis=tuple(range(1, np.ndim(series)))))
    return int(nonzero[-1]) + 1 if len(nonzero) else 0


def _core_shape(*primals, series=()):
    """The broadcast shape of primal arrays and of series (whose axis 0 is dropped)."""
    return np.broadcast_shapes(*[np.shape(a) for a in primals], *[np.shape(s)[1:] for s in series])


def _stack(c0, series, shape):
    """Coefficients 0..K of one quantity in one (K+1, *shape) array."""
    out = np.empty((len(series) + 1,) + shape)
    out[0] = c0
    out[1:] = series
    return out


def _weighted(series, shape):
    """j x_j for j = 1..K: the coefficients of t x'(t), shape (K, *shape)."""
    k = np.arange(1.0, len(series) + 1).reshape((-1,) + (1,) * len(shape))
    return np.broadcast_to(series, (len(series),) + shape) * k


def _taylor_riccati(xs, y0, a, b, c):
    shape = _core_shape(y0, series=[xs])
    K, jx = len(xs), _weighted(xs, shape)
    y = np.empty((K + 1,) + shape)
    y[0] = y0
    p = _degree(xs)
    if not c:  # w = a + b y: the sum is b Σ j x_j y_{k-j} plus a k x_k, with no array for w
        for k in range(1, K + 1):
            m = min(k, p)
            y[k] = _dot(jx[:m], y[k - 1::-1][:m]) * (b / k)
            if a and k <= p:
                y[k] += a * xs[k - 1]
        return y[1:]
    w = np.empty((K,) + shape)
    w[0] = a + b * y[0] + c * y[0] * y[0]
    for k in range(1, K + 1):
        m = min(k, p)
        y[k] = _dot(jx[:m], w[k - 1::-1][:m]) / k
        if k < K:
            w[k] = b * y[k] + c * _dot(y[: k + 1], y[k::-1])
    return y[1:]


def _taylor_integrate(xs, h0, hs):
    shape = _core_shape(h0, series=[xs, hs])
    K, jx, h = len(xs), _weighted(xs, shape), _stack(h0, hs, shape)
    y = np.empty((K,) + shape)
    p = _degree(xs)
    for k in range(1, K + 1):
        m = min(k, p)
        y[k - 1] = _dot(jx[:m], h[k - 1::-1][:m]) / k
    return y


def _taylor_log(us, u0):
    shape = _core_shape(u0, series=[us])
    u = _stack(u0, us, shape)
    y, jy = np.empty_like(u), np.empty_like(u)
    inverse = 1.0 / u[0]
    p = _degree(us)
    for k in range(1, len(u)):
        lo = max(1, k - p)  # u_{k-j} = 0 for k - j > p
        y[k] = (u[k] - _dot(jy[lo:k], u[k - lo:0:-1]) / k) * inverse
        jy[k] = k * y[k]
    return y[1:]


def _taylor_pow(us, u0, y0, r):
    shape = _core_shape(u0, y0, r, series=[us])
    u = _stack(u0, us, shape)
    y = np.empty_like(u)
    y[0] = y0
    p = _degree(us)
    for k in range(1, len(u)):
        lo = max(0, k - p)  # u_{k-j} = 0 for k - j > p
        t = u[k - lo:0:-1] * y[lo:k]  # u_{k-j} y_j for j = lo..k-1
        y[k] = (r * np.tensordot(np.arange(k - lo, 0, -1.0), t, 1) - np.tensordot(np.arange(lo, k, 1.0), t, 1)) / (
            k * u[0])
        if k == 1:  # y_1 = r u^(r-1) u_1, also where u = 0: the jvp's one-sided +-inf (sqrt, cbrt) or 0
            y[1] = np.where(u[0] == 0, r * u[1] * np.power(np.abs(u[0]), r - 1.0), y[1])
    return y[1:]


def _taylor_div(as_, bs, y0, b0):
    shape = _core_shape(y0, b0, series=[as_, bs])
    K, b = len(bs), _stack(b0, bs, shape)
    a = np.broadcast_to(as_, (K,) + shape)
    y = np.empty((K + 1,) + shape)
    y[0] = y0
    inverse = 1.0 / b[0]
    p = _degree(bs)
    for k in range(1, K + 1):
        m = min(k, p)
        y[k] = (a[k - 1] - _dot(b[1:m + 1], y[k - 1::-1][:m])) * inverse
    return y[1:]


def _taylor_sincos(xs, s0, c0, sign):
    shape = _core_shape(s0, c0, series=[xs])
    K, jx = len(xs), _weighted(xs, shape)
    sc = np.empty((2, K + 1) + shape)  # sin and cos together: one contraction per k for both
    sc[0, 0], sc[1, 0] = s0, c0
    factor = np.array([1.0, sign]).reshape((2,) + (1,) * len(shape))
    p = _degree(xs)
    for k in range(1, K + 1):
        m = min(k, p)
        sc[:, k] = np.einsum("i...,ti...->t...", jx[:m], sc[::-1, k - 1::-1][:, :m]) * (factor / k)
    return sc[:, 1:]


def _taylor_conv(a, b, prim):
    K, pa, pb = len(a), _degree(a), _degree(b)
    ranges = [(max(1, k - pb), min(k - 1, pa)) for k in range(1, K + 1)]  # the j with a_j b_{k-j} != 0
    if prim == "mul":
        a, b = np.broadcast_arrays(a, b)
        out = np.zeros(a.shape)
        for k, (lo, hi) in enumerate(ranges, start=1):
            if lo <= hi:
                out[k - 1] = _dot(a[lo - 1:hi], b[k - 2::-1][lo - 1:hi])
        return out
    bilinear_map = get(prim)
    out = np.zeros((K,) + eval_primitive(bilinear_map, [a[:1], b[:1]], {}).shape[1:])
    for k, (lo, hi) in enumerate(ranges, start=1):
        if lo <= hi:
            out[k - 1] = eval_primitive(bilinear_map, [a[lo - 1:hi], b[k - 2::-1][lo - 1:hi]], {}).sum(axis=0)
    return out


# ---------------------------------------------------------------- tier 2
#
# The recurrences above as jax code (compile/xla.py; ``jx.np`` is jax.numpy): the same sums, over
# every coefficient (no degree test: it reads values) and unrolled over k, since K is a shape.


def _coefficients(jx, c0, series, shape):
    """Coefficients 0..K of one quantity as a list of arrays of ``shape``."""
    return [jx.np.broadcast_to(c0, shape)] + [jx.np.broadcast_to(series[j], shape) for j in range(series.shape[0])]


def _xla_shape(jx, *primals, series=()):
    return jx.np.broadcast_shapes(*[jx.np.shape(a) for a in primals], *[jx.np.shape(s)[1:] for s in series])


def _riccati_xla(jx, xs, y0, a, b, c):
    shape = _xla_shape(jx, y0, series=[xs])
    x, y = _coefficients(jx, 0.0, xs, shape), [jx.np.broadcast_to(y0, shape)]
    w = [a + b * y[0] + c * y[0] * y[0]]
    for k in range(1, len(x)):
        y.append(sum(j * x[j] * w[k - j] for j in range(1, k + 1)) / k)
        w.append(b * y[k] + c * sum(y[j] * y[k - j] for j in range(k + 1)))
    return jx.np.stack(y[1:])


def _integrate_xla(jx, xs, h0, hs):
    shape = _xla_shape(jx, h0, series=[xs, hs])
    x, h = _coefficients(jx, 0.0, xs, shape), _coefficients(jx, h0, hs, shape)
    return jx.np.stack([sum(j * x[j] * h[k - j] for j in range(1, k + 1)) / k for k in range(1, len(x))])


def _log_xla(jx, us, u0):
    shape = _xla_shape(jx, u0, series=[us])
    u, y = _coefficients(jx, u0, us, shape), [None]
    for k in range(1, len(u)):
        y.append((u[k] - sum(j * y[j] * u[k - j] for j in range(1, k)) / k) / u[0])
    return jx.np.stack(y[1:])


def _pow_xla(jx, us, u0, y0, r):
    shape = _xla_shape(jx, u0, y0, r, series=[us])
    u, y = _coefficients(jx, u0, us, shape), [jx.np.broadcast_to(y0, shape)]
    for k in range(1, len(u)):
        y.append(sum((r * (k - j) - j) * u[k - j] * y[j] for j in range(k)) / (k * u[0]))
    y[1] = jx.np.where(u[0] == 0, r * u[1] * jx.np.power(jx.np.abs(u[0]), r - 1.0), y[1])
    return jx.np.stack(y[1:])


def _div_xla(jx, as_, bs, y0, b0):
    shape = _xla_shape(jx, y0, b0, series=[as_, bs])
    K = bs.shape[0]
    a = jx.np.broadcast_to(as_, (K,) + shape)
    b, y = _coefficients(jx, b0, bs, shape), [jx.np.broadcast_to(y0, shape)]
    for k in range(1, K + 1):
        y.append((a[k - 1] - sum(b[j] * y[k - j] for j in range(1, k + 1))) / b[0])
    return jx.np.stack(y[1:])


def _sincos_xla(jx, xs, s0, c0, sign):
    shape = _xla_shape(jx, s0, c0, series=[xs])
    x, s, c = _coefficients(jx, 0.0, xs, shape), [jx.np.broadcast_to(s0, shape)], [jx.np.broadcast_to(c0, shape)]
    for k in range(1, len(x)):
        s.append(sum(j * x[j] * c[k - j] for j in range(1, k + 1)) / k)
        c.append(sign * sum(j * x[j] * s[k - j] for j in range(1, k + 1)) / k)
    return jx.np.stack([jx.np.stack(s[1:]), jx.np.stack(c[1:])])


def _conv_xla(jx, a, b, prim):
    bilinear_map = {"mul": lambda p, q: p * q, "matmul": lambda p, q: p @ q,
                    "mul0": lambda p, q: jx.np.where(p == 0, 0.0, p * q)}[prim]
    K = a.shape[0]
    first = bilinear_map(a[0], b[0])
    out = [jx.np.zeros(first.shape)]
    for k in range(2, K + 1):
        out.append(sum(bilinear_map(a[j - 1], b[k - j - 1]) for j in range(1, k)))
    return jx.np.stack([jx.np.broadcast_to(o, first.shape) for o in out])


def _inv_xla(jx, As, X0):
    X = [X0]
    for k in range(1, As.shape[0] + 1):
        X.append(-(X0 @ sum(As[j - 1] @ X[k - j] for j in range(1, k + 1))))
    return jx.np.stack(jx.np.broadcast_arrays(*X[1:]))


def _solve_xla(jx, A0, As, Bs, X0):
    K = As.shape[0]
    shape = _taylor_solve_shape((jx.np.shape(A0),), (As.shape,), (jx.np.shape(Bs),), (X0.shape,))[0][1:]
    B = jx.np.broadcast_to(Bs, (K,) + shape)
    X = [jx.np.broadcast_to(X0, shape)]
    for k in range(1, K + 1):
        X.append(jx.np.linalg.solve(A0, B[k - 1] - sum(As[j - 1] @ X[k - j] for j in range(1, k + 1))))
    return jx.np.stack(X[1:])


def _cholesky_xla(jx, As, L0):
    np_ = jx.np
    S = 0.5 * (As + np_.swapaxes(As, -1, -2))
    n = L0.shape[-1]
    phi = np_.tri(n) - 0.5 * np_.eye(n)
    L = [L0]
    for k in range(1, As.shape[0] + 1):
        R = S[k - 1] - sum(L[j] @ np_.swapaxes(L[k - j], -1, -2) for j in range(1, k))
        M = np_.linalg.solve(L0, np_.swapaxes(np_.linalg.solve(L0, R), -1, -2))
        L.append(L0 @ (M * phi))
    return np_.stack(np_.broadcast_arrays(*L[1:]))


def _prod_xla(jx, xs, x0, axes):
    np_ = jx.np
    c = np_.concatenate([np_.broadcast_to(x0, np_.broadcast_shapes(np_.shape(x0), xs.shape[1:]))[None],
                         np_.broadcast_to(xs, (xs.shape[0],) + np_.broadcast_shapes(np_.shape(x0), xs.shape[1:]))])
    moved = np_.moveaxis(c, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    if flat.shape[-1] == 0:
        return np_.zeros((xs.shape[0],) + flat.shape[1:-1])
    while flat.shape[-1] > 1:
        if flat.shape[-1] % 2:
            one = np_.zeros(flat.shape[:-1] + (1,)).at[0].set(1.0)
            flat = np_.concatenate([flat, one], axis=-1)
        a, b = flat[..., 0::2], flat[..., 1::2]
        flat = np_.stack([sum(a[i] * b[k - i] for i in range(k + 1)) for k in range(a.shape[0])])
    return flat[1:, ..., 0]


def _series_shape(*avals, **_):
    return broadcast_shapes(*[a[0] for a in avals]), FLOAT


def _series_helper(name, impl, xla, doc, shape=_series_shape, params=None):
    register(Primitive(name, shape, impl=impl, xla=xla, doc=doc, params=params or {}))


_series_helper("taylor_riccati", _taylor_riccati, _riccati_xla,
               "(x series, y0; a, b, c) -> y series for y' = x' (a + b y + c y²)",
               params={"a": NUMBER, "b": NUMBER, "c": NUMBER})
_series_helper("taylor_integrate", _taylor_integrate, _integrate_xla,
               "(x series, h0, h series) -> y series for y' = x' h")
_series_helper("taylor_log", _taylor_log, _log_xla, "(u series, u0) -> series of log u")
_series_helper("taylor_pow", _taylor_pow, _pow_xla, "(u series, u0, y0, r) -> series of u^r")
_series_helper("taylor_div", _taylor_div, _div_xla, "(a series, b series, y0, b0) -> series of a / b")
_series_helper("taylor_sincos", _taylor_sincos, _sincos_xla, "(u series, s0, c0; sign) -> series of sin/cos (sign -1) "
               "or sinh/cosh (+1) stacked on a new axis 0",
               shape=lambda x, s, c, sign: ((2,) + _series_shape(x, s, c)[0], FLOAT), params={"sign": NUMBER})
_series_helper("taylor_conv", _taylor_conv, _conv_xla, "(a series, b series; prim) -> Σ_{j=1..k-1} B(a_j, b_{k-j}), "
               "B the bilinear primitive prim", shape=lambda a, b, prim: get(prim).shape_rule(a, b),
               params={"prim": Param("a bilinear primitive (mul, mul0, matmul)", lambda v: v in BILINEAR)})


# ---------------------------------------------------------------- matrix recurrences
#
# Series are (K, ..., n, n) arrays of coefficients 1..K (coefficient 0 is the primal);
# each recurrence solves the k-th coefficient of an identity that defines the function.


def _taylor_inv(As, X0):
    """X = inv(A): Σ_{j=0..k} A_j X_{k-j} = 0, so X_k = -X_0 Σ_{j=1..k} A_j X_{k-j}."""
    X = np.empty((len(As) + 1,) + np.broadcast_shapes(As.shape[1:], X0.shape))
    X[0] = X0
    for k in range(1, len(X)):
        X[k] = -(X0 @ np.sum(As[:k] @ X[k - 1::-1], axis=0))
    return X[1:]


def _taylor_solve(A0, As, Bs, X0):
    """X = solve(A, B): A_0 X_k = B_k - Σ_{j=1..k} A_j X_{k-j}."""
    shape = _taylor_solve_shape((np.shape(A0),), (As.shape,), (np.shape(Bs),), (X0.shape,))[0][1:]
    X = np.empty((len(As) + 1,) + shape)
    X[0] = X0
    B = np.broadcast_to(Bs, (len(As),) + shape)
    for k in range(1, len(X)):
        X[k] = np.linalg.solve(A0, B[k - 1] - np.sum(As[:k] @ X[k - 1::-1], axis=0))
    return X[1:]


def _taylor_solve_shape(a0, sa, sb, x0):
    lead = broadcast_shapes(sa[0][1:-2], sb[0][1:-2], x0[0][:-2])
    return (sa[0][0],) + lead + x0[0][-2:], FLOAT


def _taylor_cholesky(As, L0):
    """L Lᵀ = S = (A + Aᵀ)/2 gives L_0 L_kᵀ + L_k L_0ᵀ = R_k := S_k - Σ_{j=1..k-1} L_j L_{k-j}ᵀ,
    solved by L_k = L_0 Φ(L_0⁻¹ R_k L_0⁻ᵀ), Φ keeping the lower triangle and half the diagonal."""
    S = 0.5 * (As + np.swapaxes(As, -1, -2))
    L = np.empty((len(As) + 1,) + np.broadcast_shapes(As.shape[1:], L0.shape))
    L[0] = L0
    n = L0.shape[-1]
    phi = np.tri(n) - 0.5 * np.eye(n)
    for k in range(1, len(L)):
        R = S[k - 1] - np.sum(L[1:k] @ np.swapaxes(L[k - 1:0:-1], -1, -2), axis=0)
        M = np.linalg.solve(L0, np.swapaxes(np.linalg.solve(L0, R), -1, -2))
        L[k] = L0 @ (M * phi)
    return L[1:]


register(Primitive("taylor_inv", _series_shape, impl=_taylor_inv, xla=_inv_xla,
                   doc="(A series, inv(A_0)) -> series of inv(A)"))
register(Primitive("taylor_solve", _taylor_solve_shape, impl=_taylor_solve, xla=_solve_xla,
                   doc="(A_0, A series, B series, X_0) -> series of solve(A, B)"))
register(Primitive("taylor_cholesky", _series_shape, impl=_taylor_cholesky, xla=_cholesky_xla,
                   doc="(A series, L_0) -> series of cholesky(A)"))


# ---------------------------------------------------------------- reductions


def _taylor_prod(xs, x0, axes):
    """Series of prod(x, axes): Cauchy products of the group's series, pairwise in log2(n)
    rounds (no division, so exact at zeros): c_k = Σ_{j=0..k} a_j b_{k-j}."""
    c = np.empty((len(xs) + 1,) + np.broadcast_shapes(np.shape(x0), xs.shape[1:]))
    c[0], c[1:] = x0, xs
    moved = np.moveaxis(c, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    if flat.shape[-1] == 0:
        return np.zeros((len(xs),) + flat.shape[1:-1])
    while flat.shape[-1] > 1:
        if flat.shape[-1] % 2:
            one = np.zeros(flat.shape[:-1] + (1,))
            one[0] = 1.0
            flat = np.concatenate([flat, one], axis=-1)
        a, b = flat[..., 0::2], flat[..., 1::2]
        flat = np.stack([np.einsum("i...,i...->...", a[: k + 1], b[k::-1]) for k in range(len(a))])
    return flat[1:, ..., 0]


register(Primitive("taylor_prod", lambda xs, x0, axes: (_reduced(broadcast_shapes(xs[0], x0[0]), axes), FLOAT),
                   impl=_taylor_prod, xla=_prod_xla, doc="(x series, x0; axes) -> series of prod(x, axes)",
                   params={"axes": AXES}))


def _reduced(shape, axes):
    n = len(shape)
    return tuple(d for i, d in enumerate(shape) if i - n not in axes)

