"""Reductions over ``axes`` (a tuple of negative axes; the empty tuple is the identity), and
scans along one ``axis`` (``cumsum``: linear; its transpose is the reversed cumulative sum).

In the language every reduction takes numpy's ``axis`` (an int, a tuple, None) and
``keepdims``; ``mean`` (the sum over the count) and ``max``/``min`` of several arrays
(elementwise, as Python's) are composites registered by name here, and ``logsumexp`` takes
scipy's weights ``b``.

``max``/``min`` split the derivative equally among tied maxima. ``prod`` is
differentiated as a balanced tree of pairwise products (exact at zeros, and
made of primitives with rules, so derivatives of every order exist). ``logsumexp``
and ``norm2`` have dedicated rules: logsumexp is computed around its maximum
(no overflow) and its derivative is the softmax; the gradient of ``norm2`` at
0 is 0 (the minimum-norm subgradient) instead of 0/0.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.errors import ProgramError, ShapeError
from derivd.ops.registry import (
    AWAY_FROM_0, AXES, AXIS, FLOAT, REAL, Primitive, apply, broadcast_shapes, case, language, register,
    result_dtype, scale,
)
from derivd.ops.taylor_kernels import composite, linear


def reduced_shape(shape, axes):
    n = len(shape)
    for a in axes:
        if not -n <= a < 0:
            raise ShapeError(f"axis {a + n} is out of range for an array of shape {list(shape)}",
                             shape=list(shape), axis=a + n)
    return tuple(d for i, d in enumerate(shape) if i - n not in axes)


def expand(y, in_shape, axes):
    """Broadcast a reduced ``y`` (``batch + reduced``) back to ``batch + in_shape``."""
    nb = len(y.shape) - (len(in_shape) - len(axes))
    keep = tuple(1 if i - len(in_shape) in axes else d for i, d in enumerate(in_shape))
    r = apply("reshape", y, shape=y.shape[:nb] + keep, in_ndim=len(y.shape))
    return apply("broadcast_to", r, shape=y.shape[:nb] + tuple(in_shape), in_ndim=len(r.shape))


def _shape(keep_dtype):
    def rule(x, axes):
        return reduced_shape(x[0], axes), (result_dtype(x[1]) if keep_dtype else FLOAT)
    return rule


def flag(v, what: str) -> bool:
    """A static boolean argument (``keepdims=True``); 0 and 1 are numpy's too."""
    if type(v) is bool or (type(v) is int and v in (0, 1)):
        return bool(v)
    raise ProgramError(f"{what} must be True or False", code="type_error")


def keep(lib, y, x, axis, keepdims):
    """numpy's ``keepdims``: when true, ``y`` (``x`` reduced over ``axis``) keeps those axes with length 1."""
    if not flag(keepdims, "keepdims"):
        return y
    axes = lib.axes(x, axis)
    return lib.reshape_to(y, tuple(1 if i - x.ndim in axes else d for i, d in enumerate(x.shape)))


def over_axes(prim, floats=True, nonempty=False):
    """The language's ``f(x, axis=None, keepdims=False)`` of a reduction: over an axis, a tuple of them,
    or all (None); ``floats``: integers and masks become floats first; ``nonempty``: no identity, so no
    empty reduction."""

    def call(lib, x, axis=None, keepdims=False):
        x = lib.arr(x)
        return keep(lib, lib.reduce(prim, lib.as_float(x) if floats else x, axis, nonempty=nonempty), x, axis, keepdims)

    return call


@language("mean")
def mean(lib, x, axis=None, keepdims=False):
    """mean(x, axis=None, keepdims=False): the sum over ``axis`` (an int, a tuple, None: all) divided
    by the count; an empty mean is refused."""
    x = lib.as_float(x)
    axes = lib.axes(x, axis)
    count = math.prod(x.shape[a] for a in axes)
    if count == 0:
        raise ShapeError(f"mean() of an empty array (shape {list(x.shape)})", shape=list(x.shape))
    return keep(lib, apply("sum", x, axes=axes) / float(count), x, axis, keepdims)


def _extreme(prim, pairwise):
    """``max(x, axis=None, keepdims=False)`` reduces (ties share the derivative equally);
    ``max(a, b, ...)`` is elementwise, as in Python (a tie: ½ to each)."""

    def call(lib, x, *more, axis=None, keepdims=False):
        if more:
            if axis is not None or keepdims:
                raise ProgramError("axis= and keepdims= are for reductions of one array", code="bad_arguments")
            out = lib.as_float(x)
            for y in more:
                out = apply(pairwise, out, lib.as_float(y))
            return out
        x = lib.arr(x)
        return keep(lib, lib.reduce(prim, x, axis, nonempty=True), x, axis, keepdims)

    call.__doc__ = _extreme.__doc__.replace("max", prim)
    return call


# Sweep cases: (shape, axes) pairs covering vectors, matrices, rank 3, partial and empty reductions.
_AXES = [((3,), (-1,)), ((2, 3), (-2, -1)), ((2, 3), (-2,)), ((2, 3), (-1,)), ((2, 3, 2), (-3, -1)), ((3,), ())]


def reduction(name, template, jvp, vjp, keep_dtype=False, impl=None, doc="", taylor=None, sparsity=("reduce", ()),
              argument=("real", REAL), dsl=None, xla=None):
    """A reduction over ``axes``, swept with ``argument`` (a kind and its domain) at each of ``_AXES``;
    ``dsl``: its language names (``over_axes``)."""
    kind, domain = argument
    register(Primitive(name, _shape(keep_dtype), template=template, impl=impl, jvp=jvp, vjp=vjp, taylor=taylor,
                       xla=xla, doc=doc, sparsity=sparsity, params={"axes": AXES}, dsl=dsl or {},
                       sample=[{"args": [(kind, shape, domain)], "params": {"axes": axes}} for shape, axes in _AXES]))


reduction(
    "sum", "np.add.reduce({0}, axis={axes})",  # np.sum's own call, without its Python wrapper (~1 us)
    jvp=lambda p, t, out, axes: None if t[0] is None else apply("sum", t[0], axes=axes),
    vjp=lambda p, out, ct, axes: [expand(ct, p[0].shape, axes)],
    taylor=linear, keep_dtype=True, dsl={"sum": over_axes("sum", floats=False)},
    xla=lambda jx, x, axes: jx.sum(x, axes),  # a long vector summed whole: in two stages (compile/xla.py)
    doc="sum over axes (sum(x, axis=None, keepdims=False))",
)


def _tie_weights(x, out, axes):
    hit = apply("where", apply("eq", x, expand(out, x.shape, axes)), 1.0, 0.0)
    return hit / expand(apply("sum", hit, axes=axes), x.shape, axes)


for _name in ("max", "min"):
    reduction(
        _name, "np.%s({0}, axis={axes})" % _name,
        jvp=lambda p, t, out, axes: None if t[0] is None else apply(
            "sum", t[0] * _tie_weights(p[0], out, axes), axes=axes),
        vjp=lambda p, out, ct, axes: [scale(expand(ct, p[0].shape, axes), _tie_weights(p[0], out, axes))],
        taylor=linear, keep_dtype=True, argument=("distinct", (-2.0, 2.0)),
        dsl={_name: _extreme(_name, "maximum" if _name == "max" else "minimum")},
        doc=f"{_name} over axes; a tie shares the derivative equally (1/k to each of k tied entries)",
    )


def _cut(v, start, stop):
    return apply("index", v, items=((start, stop, 1),))


def _merged(v, axes, core_ndim):
    """``v`` (batch + core) with the reduced axes moved last and merged: batch + rest + (N,)."""
    rest = [i for i in range(core_ndim) if i - core_ndim not in axes]
    perm = tuple(rest + [a + core_ndim for a in axes])
    if perm != tuple(range(core_ndim)):
        v = apply("transpose", v, perm=perm)
    core = v.shape[len(v.shape) - core_ndim:]
    rest_shape = core[: len(rest)]
    return apply("reshape", v, shape=rest_shape + (math.prod(core[len(rest):]),), in_ndim=core_ndim), perm


def _prod_jvp(p, t, out, axes):
    """The product as a balanced tree of pairwise products, differentiated level by level:
    (a b)' = a' b + a b'. No division, so exact where factors are 0, and made of index,
    mul and concat only, so every higher derivative has rules too."""
    if t[0] is None or p[0].size == 0:
        return None
    x, _ = _merged(p[0], axes, p[0].ndim)
    dx, _ = _merged(t[0], axes, p[0].ndim)
    while x.shape[-1] > 1:
        m = x.shape[-1]
        h = m // 2
        a, b, da, db = _cut(x, 0, h), _cut(x, h, 2 * h), _cut(dx, 0, h), _cut(dx, h, 2 * h)
        nx, ndx = a * b, da * b + a * db
        if m % 2:
            nx, ndx = apply("concat", nx, _cut(x, 2 * h, m), axis=-1), apply("concat", ndx, _cut(dx, 2 * h, m), axis=-1)
        x, dx = nx, ndx
    return apply("reshape", dx, shape=x.shape[:-1], in_ndim=x.ndim)


def _prod_vjp(p, out, ct, axes):
    """The transpose of ``_prod_jvp``: the tree's levels walked back down, x̄ = ct · prod of the others."""
    if p[0].size == 0:
        return [None]
    core = p[0].ndim
    x, perm = _merged(p[0], axes, core)
    moved = x.shape[:-1] + tuple(p[0].shape[i] for i in perm[x.ndim - 1:])
    levels = []
    while x.shape[-1] > 1:
        m = x.shape[-1]
        h = m // 2
        a, b = _cut(x, 0, h), _cut(x, h, 2 * h)
        levels.append((a, b, m))
        x = a * b if m % 2 == 0 else apply("concat", a * b, _cut(x, 2 * h, m), axis=-1)
    mul = (lambda c, d: apply("mul0", c, d)) if ct.masked else (lambda c, d: c * d)
    g = apply("reshape", ct, shape=x.shape, in_ndim=x.ndim - 1)
    for a, b, m in reversed(levels):
        h = m // 2
        top = _cut(g, 0, h)
        parts = [mul(top, b), mul(top, a)] + ([_cut(g, h, h + 1)] if m % 2 else [])
        g = apply("concat", *parts, axis=-1)
    g = apply("reshape", g, shape=moved, in_ndim=x.ndim)
    if perm != tuple(range(core)):
        g = apply("transpose", g, perm=tuple(int(i) for i in np.argsort(perm)))
    return [g]


reduction("prod", "np.prod({0}, axis={axes})", jvp=_prod_jvp, vjp=_prod_vjp, sparsity=("reduce", "all"),
          dsl={"prod": over_axes("prod")}, doc="product over axes; exact where factors are 0 (no division)",
          taylor=lambda p, s, out, jet, axes: apply("taylor_prod", s[0], p[0], axes=axes))


def _logsumexp(x, axes):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - m), axis=axes)) + np.squeeze(m, axis=axes)


def _logsumexp_xla(jx, x, axes):
    m = jx.np.max(x, axis=axes, keepdims=True)
    m = jx.np.where(jx.np.isfinite(m), m, 0.0)
    return jx.np.log(jx.np.sum(jx.np.exp(x - m), axis=axes)) + jx.np.squeeze(m, axis=axes)


def _softmax_of(x, out, axes):
    """exp(x - logsumexp(x)), with the maximum taken out of both terms first: x - out would
    lose the digits of a large |x| (at x ~ 1e8, half of them)."""
    z = x - expand(apply("max", x, axes=axes), x.shape, axes)
    return apply("exp", z - expand(apply("logsumexp", z, axes=axes), x.shape, axes))


def _logsumexp_taylor(p, s, out, jet, axes):
    """logsumexp(x) = c + log Σ exp(x - c) for any constant c; with c = max(x) held constant
    (coefficient 0 only) nothing overflows, and the series is that of log Σ exp(x - c)."""
    x = p[0]
    c = apply("max", x, axes=axes)
    shifted = apply("exp", x - expand(c, x.shape, axes))
    return jet.series(apply("log", apply("sum", shifted, axes=axes)), constants=[c])


def _logsumexp_call(lib, x, axis=None, b=None, keepdims=False):
    """logsumexp(x, axis=None, b=None, keepdims=False): log Σ b·exp(x) over ``axis`` (scipy's). With
    ``b``, computed as m + log Σ b·exp(x - m), m the maximum (held fixed: the result does not depend
    on it); b >= 0 (a negative sum is NaN, as scipy without return_sign)."""
    x = lib.as_float(x)
    if b is None:
        return over_axes("logsumexp", nonempty=True)(lib, x, axis, keepdims)
    b = lib.as_float(b)
    shape = broadcast_shapes(x.shape, b.shape)
    if shape != x.shape:
        x = apply("broadcast_to", x, shape=shape, in_ndim=x.ndim)
    axes = lib.axes(x, axis)
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"logsumexp() of an empty array (shape {list(x.shape)})", shape=list(x.shape))
    m = apply("max", x, axes=axes)
    m = apply("where", apply("isfinite", m), m, 0.0)
    out = apply("log", apply("sum", b * apply("exp", x - expand(m, x.shape, axes)), axes=axes)) + m
    return keep(lib, out, x, axis, keepdims)


reduction(
    "logsumexp", None, impl=_logsumexp, xla=_logsumexp_xla,
    jvp=lambda p, t, out, axes: None if t[0] is None else apply("sum", t[0] * _softmax_of(p[0], out, axes), axes=axes),
    vjp=lambda p, out, ct, axes: [scale(expand(ct, p[0].shape, axes), _softmax_of(p[0], out, axes))],
    taylor=_logsumexp_taylor, sparsity=("reduce", "all"), dsl={"logsumexp": _logsumexp_call},
    doc="log(sum(exp(x))) shifted by the maximum: no overflow; derivative is the softmax",
)


def _safe_norm(out):
    return apply("where", apply("eq", out, 0.0), 1.0, out)


reduction(
    "norm2", "np.sqrt(np.sum(np.square({0}), axis={axes}))",
    jvp=lambda p, t, out, axes: None if t[0] is None else apply("sum", t[0] * p[0], axes=axes) / _safe_norm(out),
    vjp=lambda p, out, ct, axes: [expand(scale(ct, apply("reciprocal", _safe_norm(out))), p[0].shape, axes) * p[0]],
    taylor=composite(lambda x, y, axes: apply("sqrt", apply("sum", apply("square", x), axes=axes)),
                     vanish_at_zero=True),
    sparsity=("reduce", "all"), argument=("real", AWAY_FROM_0),  # the language's norm: ops/linalg.py
    doc="Euclidean norm; gradient 0 at the origin (minimum-norm subgradient), not 0/0",
)


# ---------------------------------------------------------------- scans


def _scan_shape(x, axis: int):
    """A scan keeps its input's shape; ``axis`` (negative) must be one of its axes."""
    n = len(x[0])
    if not -n <= axis < 0:
        raise ShapeError(f"axis {axis + n} is out of range for an array of shape {list(x[0])}",
                         shape=list(x[0]), axis=axis + n)
    return x[0], result_dtype(x[1])


def _reversed(v, axis):
    """``v`` reversed along ``axis`` (negative): an ``index`` of the axes from there on."""
    return apply("index", v, items=((v.shape[axis] - 1, -1, -1),) + tuple((0, d, 1) for d in v.shape[axis:][1:]))


def _cumsum_call(lib, x, axis=None):
    """numpy's cumsum(x, axis): along one axis, or along the flattened array when axis is None."""
    x = lib.arr(x)
    if axis is None:
        return apply("cumsum", lib.flat(x), axis=-1)
    return apply("cumsum", x, axis=lib.axis(x, axis))


register(Primitive(
    "cumsum", _scan_shape,
    template="np.cumsum({0}, axis={axis})",
    jvp=lambda p, t, out, axis: None if t[0] is None else apply("cumsum", t[0], axis=axis),
    vjp=lambda p, out, ct, axis: [_reversed(apply("cumsum", _reversed(ct, axis), axis=axis), axis)],
    taylor=linear, sparsity=("linear", ()), dsl={"cumsum": _cumsum_call}, params={"axis": AXIS},
    sample=[case((4,), axis=-1), case((2, 3), axis=-2), case((2, 3), axis=-1), case((2, 3, 2), axis=-2),
            case((1,), axis=-1)],
    doc="cumulative sum along one axis; derivative: the same sum, transpose: the sum from the end",
))
