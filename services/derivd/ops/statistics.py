"""Statistics and order along axes: ``var std average ptp cumprod diff gradient sort partition
median quantile percentile``, numpy's definitions and argument names.

Three primitives carry the order statistics: ``argsort`` and ``argpartition`` (integers: no
derivative) and
``take_along`` (numpy's ``take_along_axis``, linear; its transpose ``put_along_add`` adds
back, so repeated indices accumulate). ``sort(x)`` is ``take_along(x, argsort(x))`` with a
*stable* argsort: where entries tie, the k-th sorted entry is the k-th of the tied entries in
input order, and it carries that entry's derivative (one of the one-sided derivatives; the
values agree). ``partition(x, kth)`` is ``take_along(x, argpartition(x, kth))`` with numpy's
own selection, so its entries come out in numpy's order (which numpy leaves unspecified off the
``kth`` positions); tier 2 calls numpy's argpartition back on the host for the same order.
Everything else is a composition of primitives registered by name
(``ops.registry.language``) and inherits their rules to every order:

* ``var``: the mean of squared deviations from the mean, divided by ``n - ddof``;
  ``std = sqrt(var)`` (its derivative is infinite, NaN in a product, where ``var`` is 0, as
  numpy's formula's);
* ``gradient``: numpy's second-order central differences inside, one-sided first- or
  second-order ones (``edge_order``) at the ends, with numpy's formulas term by term, so the
  values are numpy's to the last bit; linear, so its derivative is the same stencil;
* ``cumprod``: a prefix-product scan of pairwise products in log2(n) rounds (no division: exact
  where entries are 0);
* ``median``: the middle of the sorted entries, the mean of the two middle ones for an even count
  (each gets half of the derivative);
* ``quantile``/``percentile``: numpy's default ("linear") method, the sorted entries at the floor
  and ceiling of ``q (n - 1)`` interpolated with numpy's own formula; ``q`` is static.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.errors import ProgramError, ShapeError
from derivd.ops.registry import (
    AXIS, INT, SIZE, Param, Primitive, apply, case, language, nullary, register,
)
from derivd.ops.reductions import keep, mean
from derivd.ops.taylor_kernels import linear

# ---------------------------------------------------------------- primitives: argsort, take_along


def _argsort_shape(x, axis):
    n = len(x[0])
    if not -n <= axis < 0:
        raise ShapeError(f"axis {axis + n} is out of range for an array of shape {list(x[0])}",
                         shape=list(x[0]), axis=axis + n)
    return x[0], INT


register(Primitive(
    "argsort", _argsort_shape, template="np.argsort({0}, axis={axis}, kind='stable')", differentiable=False,
    params={"axis": AXIS}, sample=[case((4,), axis=-1), case((2, 3), axis=-2)],
    doc="the stable sorting permutation along one axis (integers; ties keep their order)",
))


def _argpartition_shape(x, kth, axis):
    shape = _argsort_shape(x, axis)[0]
    if any(k >= shape[axis] for k in kth):
        raise ShapeError(f"kth {max(kth)} is out of range for an axis of size {shape[axis]}",
                         shape=list(shape), kth=max(kth))
    return shape, INT


register(Primitive(
    "argpartition", _argpartition_shape, differentiable=False,
    impl=lambda x, kth, axis: np.argpartition(x, list(kth), axis=axis),
    xla=lambda jx, x, kth, axis: jx.callback(lambda v: np.argpartition(v, list(kth), axis=axis), x.shape, np.int64, x),
    params={"kth": Param("partition positions (a tuple of ints >= 0)", lambda v: type(v) is tuple and all(
        type(k) is int and 0 <= k < 2**62 for k in v)), "axis": AXIS},
    sample=[case((5,), kth=(2,), axis=-1), case((2, 4), kth=(0, 3), axis=-1), case((4, 2), kth=(1,), axis=-2)],
    doc="numpy's argpartition along one axis (integers): the kth entries in sorted position, smaller "
        "ones before, larger after, in numpy's order",
))


def _along_shape(x, idx, axis):
    """``x`` (batch + core) taken along core axis ``axis`` by ``idx`` (core shape, any length on ``axis``)."""
    core = len(idx[0])
    if idx[1] != INT:
        raise ShapeError("an index array must hold integers", dtype=idx[1])
    if len(x[0]) < core or not -core <= axis < 0:
        raise ShapeError(f"take_along: index of shape {list(idx[0])} does not fit an array of shape {list(x[0])}")
    lead = x[0][: len(x[0]) - core]
    if any(a != b for i, (a, b) in enumerate(zip(x[0][len(lead):], idx[0])) if i != axis + core):
        raise ShapeError(f"take_along: index of shape {list(idx[0])} does not match an array of shape "
                         f"{list(x[0])} off axis {axis + core}")
    return lead + idx[0], x[1]


def _take_along(x, idx, axis):
    x, idx = np.asarray(x), np.asarray(idx)
    return np.take_along_axis(x, np.broadcast_to(idx, x.shape[: x.ndim - idx.ndim] + idx.shape), axis=axis)


def _put_along_shape(ct, idx, axis, size):
    core = len(idx[0])
    lead = ct[0][: len(ct[0]) - core]
    shape = list(idx[0])
    shape[axis] = size
    return lead + tuple(shape), ct[1]


def _put_along_add(ct, idx, axis, size):
    ct, idx = np.asarray(ct), np.asarray(idx)
    shape = ct.shape[: ct.ndim - idx.ndim] + idx.shape
    out = np.zeros(shape[:axis] + (size,) + shape[len(shape) + axis + 1:])
    lead = np.indices(shape, sparse=True)
    where = list(lead)
    where[len(shape) + axis] = np.broadcast_to(idx, shape) % size
    np.add.at(out, tuple(where), np.broadcast_to(ct, shape))
    return out


def _take_along_xla(jx, x, idx, axis):
    np_ = jx.np
    n = x.shape[axis]
    jx.fail_if(np_.any((idx >= n) | (idx < -n)))  # tier 1 raises; jax would clamp
    idx = np_.broadcast_to(np_.where(idx < 0, idx + n, idx), x.shape[: x.ndim - idx.ndim] + idx.shape)
    return np_.take_along_axis(x, idx, axis=axis, mode="clip")


def _put_along_add_xla(jx, ct, idx, axis, size):
    np_ = jx.np
    shape = ct.shape[: ct.ndim - idx.ndim] + idx.shape
    where = list(np_.indices(shape, sparse=True))
    where[len(shape) + axis] = np_.broadcast_to(idx, shape) % size
    out = np_.zeros(shape[:axis] + (size,) + shape[len(shape) + axis + 1:])
    return out.at[tuple(where)].add(np_.broadcast_to(ct, shape))


register(Primitive(
    "take_along", _along_shape, impl=_take_along, xla=_take_along_xla,
    jvp=lambda p, t, out, axis: None if t[0] is None else apply("take_along", t[0], p[1], axis=axis),
    vjp=lambda p, out, ct, axis: [apply("put_along_add", ct, p[1], axis=axis, size=p[0].shape[axis]), None],
    taylor=linear, sparsity=("select", ()), params={"axis": AXIS},
    sample=[case((4,), ("index", (5,), 4), axis=-1), case((2, 3), ("index", (2, 3), 3), axis=-1),
            case((3, 2), ("index", (4, 2), 3), axis=-2)],
    doc="numpy's take_along_axis with an integer index array (of the array's core shape off the axis)",
))
register(Primitive(
    "put_along_add", _put_along_shape, impl=_put_along_add, xla=_put_along_add_xla,
    jvp=lambda p, t, out, axis, size: None if t[0] is None else apply("put_along_add", t[0], p[1], axis=axis,
                                                                      size=size),
    vjp=lambda p, out, ct, axis, size: [apply("take_along", ct, p[1], axis=axis), None],
    taylor=linear, sparsity=("linear", ()), params={"axis": AXIS, "size": SIZE},
    sample=[case((5,), ("index", (5,), 4), axis=-1, size=4), case((2, 3), ("index", (2, 3), 2), axis=-2, size=2)],
    doc="the transpose of take_along: adds each entry at its index (repeated indices accumulate)",
))


# ---------------------------------------------------------------- helpers


def _cut(v, axis, start, stop, step=1):
    """``v[..., start:stop:step, ...]`` on negative ``axis``."""
    return apply("index", v, items=((start, stop, step),) + tuple((0, d, 1) for d in v.shape[v.ndim + axis + 1:]))


def _at(v, axis, i):
    """``v[..., i, ...]`` on negative ``axis`` (the axis dropped)."""
    return apply("index", v, items=(i,) + tuple((0, d, 1) for d in v.shape[v.ndim + axis + 1:]))


def _lane(lib, x, axis):
    """``x`` as floats and the one negative axis numpy's ``axis`` names (None: the flattened array)."""
    x = lib.as_float(x)
    if axis is None:
        return lib.flat(x), -1
    return x, lib.axis(x, axis)


def _count(x, axes, name):
    n = math.prod(x.shape[a] for a in axes)
    if n == 0:
        raise ShapeError(f"{name}() of an empty array (shape {list(x.shape)})", shape=list(x.shape))
    return n


def _static_number(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProgramError(f"{what} must be a static number", code="type_error")
    return v


# ---------------------------------------------------------------- moments


@language("var")
def var(lib, x, axis=None, ddof=0, keepdims=False):
    """var(x, axis=None, ddof=0, keepdims=False): Σ (x - mean)² / (n - ddof) over ``axis`` (an int,
    a tuple, None: all); n - ddof <= 0 gives numpy's inf or NaN."""
    x = lib.as_float(x)
    axes = lib.axes(x, axis)
    n = _count(x, axes, "var")
    ddof = _static_number(ddof, "ddof")
    d = x - mean(lib, x, axis, keepdims=True)
    out = apply("sum", apply("square", d), axes=axes) / float(n - ddof)
    return keep(lib, out, x, axis, keepdims)


@language("std")
def std(lib, x, axis=None, ddof=0, keepdims=False):
    """std(x, axis=None, ddof=0, keepdims=False): sqrt(var(x, axis, ddof)); its derivative is
    infinite where the variance is 0."""
    return apply("sqrt", var(lib, x, axis, ddof, keepdims))


@language("average")
def average(lib, a, axis=None, weights=None, keepdims=False):
    """average(a, axis=None, weights=None, keepdims=False): Σ a·w / Σ w over ``axis``; ``weights``
    of a's shape, or 1-D along the one ``axis`` (numpy's); no weights: the mean."""
    if weights is None:
        return mean(lib, a, axis, keepdims)
    a, w = lib.as_float(a), lib.as_float(weights)
    if w.shape != a.shape:
        if axis is None or isinstance(axis, tuple) or w.ndim != 1:
            raise ShapeError(f"average: weights of shape {list(w.shape)} differ from the array's "
                             f"{list(a.shape)}; 1-D weights need one axis", shapes=[list(a.shape), list(w.shape)])
        ax = lib.axis(a, axis)
        if w.shape[0] != a.shape[ax]:
            raise ShapeError(f"average: {w.shape[0]} weights for an axis of length {a.shape[ax]}",
                             shapes=[list(a.shape), list(w.shape)])
        w = lib.reshape_to(w, (w.shape[0],) + (1,) * (-ax - 1))
    axes = lib.axes(a, axis)
    out = apply("sum", a * w, axes=axes) / apply("sum", apply("broadcast_to", w, shape=a.shape, in_ndim=w.ndim)
                                                 if w.shape != a.shape else w, axes=axes)
    return keep(lib, out, a, axis, keepdims)


@language("ptp")
def ptp(lib, x, axis=None, keepdims=False):
    """ptp(x, axis=None, keepdims=False): max - min over ``axis`` (ties share as in max and min)."""
    x = lib.as_float(x)
    out = lib.reduce("max", x, axis, nonempty=True) - lib.reduce("min", x, axis, nonempty=True)
    return keep(lib, out, x, axis, keepdims)


# ---------------------------------------------------------------- scans and differences


@language("cumprod")
def cumprod(lib, x, axis=None):
    """cumprod(x, axis=None): the running product along ``axis`` (None: the flattened array), as a
    scan of pairwise products in log2(n) rounds: no division, so every derivative is exact where
    entries are 0."""
    y, ax = _lane(lib, x, axis)
    n, d = y.shape[ax], 1
    while d < n:
        ones = nullary(y, "ones", shape=y.shape[: y.ndim + ax] + (d,) + y.shape[y.ndim + ax + 1:])
        y = y * apply("concat", ones, _cut(y, ax, 0, n - d), axis=ax)
        d *= 2
    return y


@language("diff")
def diff(lib, x, n=1, axis=-1, prepend=None, append=None):
    """diff(x, n=1, axis=-1, prepend=None, append=None): the n-th forward difference along ``axis``,
    x[i+1] - x[i] applied n times; ``prepend``/``append`` (scalars or arrays) are joined first."""
    x = lib.as_float(x)
    if x.ndim == 0:
        raise ShapeError("diff() needs an array of at least one dimension")
    n = lib.lo.static_int(n, "n")
    if n < 0:
        raise ProgramError(f"diff: order n must be non-negative, got {n}", code="bad_arguments")
    ax = lib.axis(x, axis)
    parts = []
    for extra in (prepend, x, append):
        if extra is None:
            continue
        e = lib.as_float(extra)
        if e is not x and e.ndim == 0:
            e = apply("broadcast_to", e, shape=x.shape[: x.ndim + ax] + (1,) + x.shape[x.ndim + ax + 1:], in_ndim=0)
        parts.append(e)
    if len(parts) > 1:
        x = apply("concat", *parts, axis=ax)
    for _ in range(n):
        m = x.shape[ax]
        x = _cut(x, ax, 1, max(m, 1)) - _cut(x, ax, 0, max(m - 1, 0))
    return x


@language("gradient")
def gradient(lib, f, *varargs, axis=None, edge_order=1):
    """gradient(f, *varargs, axis=None, edge_order=1): numpy's finite-difference gradient of sampled
    values, (f[i+1] - f[i-1]) / 2h inside and one-sided differences of order ``edge_order`` (1 or 2)
    at the ends, along each of ``axis`` (None: all), with static scalar spacings ``varargs`` (none:
    1; one: for every axis; else one per axis; coordinate arrays are refused). One axis gives an
    array, several a list, as numpy."""
    x = lib.as_float(f)
    lib.axes(x, axis)  # checked (range, repeats); numpy answers in the order given
    axes = lib.axes(x, None) if axis is None else lib.axes_in_order(x, axis)
    if len(varargs) not in (0, 1, len(axes)):
        raise ProgramError(f"gradient: give no spacing, one, or one per axis ({len(axes)}), not {len(varargs)}",
                           code="bad_arguments")
    steps = [float(_static_number(v, "gradient's spacing (coordinate arrays are not supported)"))
             for v in varargs] or [1.0]
    steps = steps * len(axes) if len(steps) == 1 else steps
    order = lib.lo.static_int(edge_order, "edge_order")
    if order not in (1, 2):
        raise ProgramError("gradient: edge_order must be 1 or 2", code="bad_arguments")
    out = [_gradient_along(x, ax, h, order) for ax, h in zip(axes, steps)]
    return out[0] if len(out) == 1 else out


def _gradient_along(x, ax, h, order):
    n = x.shape[ax]
    if n < order + 1:
        raise ShapeError(f"gradient: an axis of size {n} is too small for edge_order={order} (at least "
                         f"{order + 1} entries)", shape=list(x.shape), axis=ax)
    parts = [(_cut(x, ax, 1, 2) - _cut(x, ax, 0, 1)) / h] if order == 1 else [
        (-1.5 / h) * _cut(x, ax, 0, 1) + (2.0 / h) * _cut(x, ax, 1, 2) + (-0.5 / h) * _cut(x, ax, 2, 3)]
    if n > 2:
        parts.append((_cut(x, ax, 2, n) - _cut(x, ax, 0, n - 2)) / (2.0 * h))
    parts.append((_cut(x, ax, n - 1, n) - _cut(x, ax, n - 2, n - 1)) / h if order == 1 else
                 (0.5 / h) * _cut(x, ax, n - 3, n - 2) + (-2.0 / h) * _cut(x, ax, n - 2, n - 1)
                 + (1.5 / h) * _cut(x, ax, n - 1, n))
    return apply("concat", *parts, axis=ax)


# ---------------------------------------------------------------- order statistics


def _sorted(x, ax):
    return apply("take_along", x, apply("argsort", x, axis=ax), axis=ax)


@language("sort")
def sort(lib, x, axis=-1):
    """sort(x, axis=-1): ascending along ``axis`` (None: the flattened array). Ties: a stable sort,
    so the k-th of equal entries in input order becomes the k-th sorted one and carries its
    derivative."""
    y, ax = _lane(lib, x, axis)
    return _sorted(y, ax)


@language("partition")
def partition(lib, x, kth, axis=-1):
    """partition(x, kth, axis=-1): numpy's partial sort, with numpy's own selection: the entries at
    the ``kth`` positions (an int or a list, negative from the end) are where sorting would put them,
    smaller ones before and larger ones after in numpy's order. Each output entry is an input entry
    and carries its derivative; ties as any order of equal entries (the values agree)."""
    y, ax = _lane(lib, x, axis)
    n = y.shape[ax]
    ks = [lib.lo.static_int(k, "kth") for k in (kth if isinstance(kth, (list, tuple)) else [kth])]
    if not ks or any(not -n <= k < n for k in ks):
        raise ShapeError(f"partition: kth {ks} out of range for an axis of size {n}", shape=list(y.shape))
    order = apply("argpartition", y, kth=tuple(sorted({k % n for k in ks})), axis=ax)
    return apply("take_along", y, order, axis=ax)


def _lerp(a, b, t):
    """numpy's quantile interpolation: a + (b - a) t, or b - (b - a)(1 - t) from t >= 1/2."""
    if t == 0:
        return a
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def _quantiles(lib, name, x, q, axis, keepdims, scale):
    """The sorted entries at q·(n - 1), interpolated (numpy's "linear" method); a list of q stacks
    its answers on a new first axis, as numpy."""
    x = lib.as_float(x)
    qs = q if isinstance(q, (list, tuple)) else [q]
    qs = [_static_number(v, f"{name}'s q") / scale for v in qs]
    if any(not 0 <= v <= 1 for v in qs):
        raise ProgramError(f"{name}: q must be in [0, {100 if scale == 100 else 1}]", code="bad_arguments")
    axes = lib.axes(x, axis)
    _count(x, axes, name)
    rest = [i - x.ndim for i in range(x.ndim) if i - x.ndim not in axes]
    perm = tuple(a + x.ndim for a in rest + list(axes))
    y = apply("transpose", x, perm=perm) if perm != tuple(range(x.ndim)) else x
    y = lib.reshape_to(y, tuple(x.shape[a] for a in rest) + (math.prod(x.shape[a] for a in axes),))
    s = _sorted(y, -1)
    n = s.shape[-1]
    outs = []
    for v in qs:
        i = v * (n - 1)
        lo = math.floor(i)
        hi = min(lo + 1, n - 1)
        outs.append(keep(lib, _lerp(_at(s, -1, lo), _at(s, -1, hi), i - lo), x, axis, keepdims))
    if isinstance(q, (list, tuple)):
        return apply("concat", *[lib.reshape_to(o, (1,) + o.shape) for o in outs], axis=-len(outs[0].shape) - 1)
    return outs[0]


@language("quantile")
def quantile(lib, x, q, axis=None, keepdims=False):
    """quantile(x, q, axis=None, keepdims=False), q static in [0, 1] (a number or a list): numpy's
    default linear method; where q (n - 1) is not an integer, the derivative splits between the two
    neighbouring sorted entries by the interpolation weights; ties as in sort."""
    return _quantiles(lib, "quantile", x, q, axis, keepdims, 1)


@language("percentile")
def percentile(lib, x, q, axis=None, keepdims=False):
    """percentile(x, q, axis=None, keepdims=False): quantile at q / 100, q static in [0, 100]."""
    return _quantiles(lib, "percentile", x, q, axis, keepdims, 100)


@language("median")
def median(lib, x, axis=None, keepdims=False):
    """median(x, axis=None, keepdims=False): the middle sorted entry; for an even count the mean of
    the two middle ones (each gets half the derivative); ties as in sort."""
    return _quantiles(lib, "median", x, 0.5, axis, keepdims, 1)
