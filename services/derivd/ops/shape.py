"""Shape primitives: all linear, so their rules move tangents and cotangents
without arithmetic. Each acts on *core* (trailing) axes and keeps any leading
batch axes, which is what lets one rule serve batched transforms.

Index items (``index``) are, per core axis, an int or a ``(start, stop, step)``
triple, normalised and bounds-checked when the graph is built. ``gather``
takes an integer array node and checks its values when it runs (they are
request constants): an index out of range is an error naming the bound,
never clamped or wrapped.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.errors import IndexOutOfRange, ShapeError
from derivd.ops.evaluate import integer, literal
from derivd.ops.registry import (
    AXIS, FLOAT, INT, ITEMS, PERM, SHAPE, SIZE, Param, Primitive, apply, case, lead, nullary, register,
    result_dtype,
)
from derivd.ops.taylor_kernels import constant, linear


def _zero_shape(shape=(), **_):
    return tuple(shape), FLOAT


# Each output entry is one entry of one input, or 0: found by running the primitive on entry numbers.
SELECT, ZERO = ("select", ()), ("zero", ())

register(Primitive("zeros", _zero_shape, template="np.zeros({shape})", scalar_template="0.0", taylor=constant,
                   sparsity=ZERO, params={"shape": SHAPE}, sample=[case(shape=()), case(shape=(2, 3))]))
register(Primitive("ones", _zero_shape, template="np.ones({shape})", scalar_template="1.0", taylor=constant,
                   sparsity=ZERO, params={"shape": SHAPE}, sample=[case(shape=()), case(shape=(3,))]))
register(Primitive("eye", lambda n: ((n, n), FLOAT), template="np.eye({n})", taylor=constant, sparsity=ZERO,
                   params={"n": SIZE}, sample=[case(n=3)]))
register(Primitive("tril_ones", lambda n: ((n, n), FLOAT), template="np.tri({n})", taylor=constant, sparsity=ZERO,
                   params={"n": SIZE}, sample=[case(n=3)]))
register(Primitive("arange", lambda n: ((n,), FLOAT), template="np.arange({n}, dtype=np.float64)",
                   taylor=constant, sparsity=ZERO, params={"n": SIZE}, sample=[case(n=4)]))


def _to_float_shape(x):
    if x[1] == FLOAT:  # a float through here would lose its derivative silently
        raise ShapeError("to_float takes masks or integers, not floats", dtype=x[1])
    return x[0], FLOAT


register(Primitive("to_float", _to_float_shape, template="np.asarray({0}, dtype=np.float64)",
                   scalar_template="float({0})", differentiable=False,
                   sample=[case(("mask", (2, 3))), case(("index", (3,), 5))],
                   doc="masks and integers as floats; they carry no derivative"))


# ---------------------------------------------------------------- reshape / broadcast / transpose


def _reshape_shape(x, shape, in_ndim):
    core = x[0][len(x[0]) - in_ndim:]
    if math.prod(core) != math.prod(shape):
        raise ShapeError(f"cannot reshape an array of shape {list(core)} into shape {list(shape)}",
                         shapes=[list(core), list(shape)])
    return lead(x[0], in_ndim) + tuple(shape), x[1]


def _reshape_template(args, params, avals):
    shape = avals[0][0]
    target = lead(shape, params["in_ndim"]) + tuple(params["shape"])
    return f"np.reshape({args[0]}, {literal(target)})"


register(Primitive(
    "reshape", _reshape_shape, template=_reshape_template,
    jvp=lambda p, t, out, shape, in_ndim: None if t[0] is None else apply(
        "reshape", t[0], shape=shape, in_ndim=in_ndim),
    taylor=linear,
    vjp=lambda p, out, ct, shape, in_ndim: [apply(
        "reshape", ct, shape=p[0].shape[len(p[0].shape) - in_ndim:], in_ndim=len(shape))],
    sparsity=SELECT, params={"shape": SHAPE, "in_ndim": SIZE},
    sample=[case((2, 3), shape=(3, 2), in_ndim=2), case((6,), shape=(2, 3), in_ndim=1),
            case((2, 3), shape=(6,), in_ndim=2), case((2, 3), shape=(3, 1), in_ndim=1),
            case((), shape=(1, 1), in_ndim=0)],
))


def _broadcast_shape(x, shape, in_ndim):
    core = x[0][len(x[0]) - in_ndim:]
    padded = (1,) * (len(shape) - len(core)) + core
    if len(core) > len(shape) or any(a != 1 and a != b for a, b in zip(padded, shape)):
        raise ShapeError(f"cannot broadcast shape {list(core)} to {list(shape)}", shapes=[list(core), list(shape)])
    return lead(x[0], in_ndim) + tuple(shape), x[1]


def _broadcast_template(args, params, avals):
    shape = avals[0][0]
    core_n = params["in_ndim"]
    lead_shape = lead(shape, core_n)
    core = shape[len(shape) - core_n:]
    padded = lead_shape + (1,) * (len(params["shape"]) - core_n) + core
    x = args[0] if padded == shape else f"np.reshape({args[0]}, {literal(padded)})"
    return f"np.broadcast_to({x}, {literal(lead_shape + tuple(params['shape']))})"


def _broadcast_vjp(p, out, ct, shape, in_ndim):
    from derivd.ops.registry import unbroadcast
    x = p[0]
    nb = len(ct.shape) - len(out.shape) + len(lead(x.shape, in_ndim))
    return [unbroadcast(ct, nb, x.shape[len(x.shape) - in_ndim:])]


register(Primitive(
    "broadcast_to", _broadcast_shape, template=_broadcast_template,
    jvp=lambda p, t, out, shape, in_ndim: None if t[0] is None else apply(
        "broadcast_to", t[0], shape=shape, in_ndim=in_ndim),
    vjp=_broadcast_vjp, taylor=linear, sparsity=SELECT, params={"shape": SHAPE, "in_ndim": SIZE},
    sample=[case((3,), shape=(2, 3), in_ndim=1), case((2, 1), shape=(2, 3), in_ndim=2),
            case((), shape=(2, 2), in_ndim=0), case((1, 3), shape=(4, 2, 3), in_ndim=2)],
))


def _transpose_shape(x, perm):
    core_n = len(perm)
    if core_n > len(x[0]) or sorted(perm) != list(range(core_n)):
        raise ShapeError(f"axes {list(perm)} do not permute an array of shape {list(x[0])}", shape=list(x[0]))
    core = x[0][len(x[0]) - core_n:]
    return lead(x[0], core_n) + tuple(core[p] for p in perm), x[1]


def _transpose_template(args, params, avals):
    perm = params["perm"]
    nl = len(avals[0][0]) - len(perm)
    full = tuple(range(nl)) + tuple(nl + p for p in perm)
    return f"np.transpose({args[0]}, {literal(full)})"


register(Primitive(
    "transpose", _transpose_shape, template=_transpose_template,
    jvp=lambda p, t, out, perm: None if t[0] is None else apply("transpose", t[0], perm=perm),
    vjp=lambda p, out, ct, perm: [apply("transpose", ct, perm=tuple(int(i) for i in np.argsort(perm)))],
    taylor=linear, sparsity=SELECT, params={"perm": PERM},
    sample=[case((2, 3), perm=(1, 0)), case((2, 3, 4), perm=(2, 0, 1)), case((2, 3, 4), perm=(1, 0))],
))


# ---------------------------------------------------------------- basic indexing


def _index_shape(x, items):
    core = x[0][len(x[0]) - len(items):]
    out = []
    for item, n in zip(items, core):
        if isinstance(item, tuple):
            out.append(len(range(*item)))
    return lead(x[0], len(items)) + tuple(out), x[1]


def _as_slice(item) -> slice:
    """A normalised ``(start, stop, step)`` as a slice; a stop of -1 (a downward slice
    through index 0, as ``slice.indices`` gives it) is ``None``, not "the last element"."""
    start, stop, step = item
    return slice(start, None if stop < 0 else stop, step)


def _index_expr(items) -> str:
    """The subscript ``..., i, start:stop:step`` of index items, each number formatted as an int."""
    parts = ["..."]
    for item in items:
        if isinstance(item, tuple):
            s = _as_slice(item)
            parts.append(f"{integer(s.start)}:{'' if s.stop is None else integer(s.stop)}:{integer(s.step)}")
        else:
            parts.append(integer(item))
    return ", ".join(parts)


register(Primitive(
    "index", _index_shape, template=lambda args, params, avals: f"{args[0]}[{_index_expr(params['items'])}]",
    jvp=lambda p, t, out, items: None if t[0] is None else apply("index", t[0], items=items),
    vjp=lambda p, out, ct, items: [apply("index_scatter", ct, items=items,
                                         in_shape=p[0].shape[len(p[0].shape) - len(items):])],
    taylor=linear, sparsity=SELECT, params={"items": ITEMS},
    sample=[case((4,), items=((1, 3, 1),)), case((5,), items=((4, -1, -2),)),
            case((3, 4), items=(1, (0, 4, 2))), case((3, 4), items=((2, -1, -1), 3))],
    doc="x[...] with ints and slices on the core axes",
))


def _index_scatter(ct, items, in_shape):
    subscript, sliced = _item_tuple(items)
    shape = np.shape(ct)
    out = np.zeros(shape[: len(shape) - sliced] + tuple(in_shape))
    out[subscript] = ct
    return out


def _item_tuple(items, _built={}):  # noqa: B006 (the cache: this source is copied into exported modules)
    """``items`` as a subscript ``(..., slice or int, ...)`` and how many of them are slices: built once
    per ``items``, a tape's static parameter that it passes at every run (at most 4,096 kept)."""
    found = _built.get(items)
    if found is None:
        if len(_built) >= 4096:
            _built.clear()
        found = _built[items] = ((Ellipsis,) + tuple(_as_slice(i) if isinstance(i, tuple) else i for i in items),
                                 sum(isinstance(i, tuple) for i in items))
    return found


def _index_add(base, ct, items):
    return _index_add_inplace(np.array(base, dtype=np.float64, copy=True), ct, items)


def _index_add_inplace(base, ct, items):
    base[_item_tuple(items)[0]] += ct
    return base


def _index_scatter_xla(jx, ct, items, in_shape):
    """The zeros around ``ct`` by ``lax.pad``, one (low, high, interior) per axis: XLA fuses a pad into
    what reads it, where a scatter is a loop of its own. An int item is a size-1 axis padded around,
    a slice with step s is interior padding s - 1 (a downward slice: the reversed upward one)."""
    lead_n = jx.np.ndim(ct) - sum(isinstance(i, tuple) for i in items)
    x = jx.np.reshape(ct, jx.np.shape(ct)[:lead_n] + tuple(
        len(range(*i)) if isinstance(i, tuple) else 1 for i in items))
    pads = [(0, 0, 0)] * lead_n
    for axis, (item, n) in enumerate(zip(items, in_shape)):
        start, stop, step = item if isinstance(item, tuple) else (item, item + 1, 1)
        count = len(range(start, stop, step))
        if count == 0:
            return jx.np.zeros(jx.np.shape(ct)[:lead_n] + tuple(in_shape))
        if step < 0:
            x = jx.np.flip(x, axis=lead_n + axis)
            start, step = start + (count - 1) * step, -step
        last = start + (count - 1) * step
        pads.append((start, n - 1 - last, step - 1))
    return jx.lax.pad(x, jx.np.zeros((), x.dtype), pads)


def _index_add_xla(jx, base, ct, items):
    shape = jx.np.shape(base)
    return base + _index_scatter_xla(jx, ct, items, shape[len(shape) - len(items):])


def _index_scatter_shape(ct, items, in_shape):
    core_out = _index_shape((tuple(in_shape), "f8"), items)[0]
    return ct[0][: len(ct[0]) - len(core_out)] + tuple(in_shape), FLOAT


register(Primitive(
    "index_scatter", _index_scatter_shape, impl=_index_scatter, xla=_index_scatter_xla,
    jvp=lambda p, t, out, items, in_shape: None if t[0] is None else apply(
        "index_scatter", t[0], items=items, in_shape=in_shape),
    vjp=lambda p, out, ct, items, in_shape: [apply("index", ct, items=items)],
    taylor=linear, sparsity=SELECT, params={"items": ITEMS, "in_shape": SHAPE},
    sample=[case((2,), items=((1, 3, 1),), in_shape=(4,)), case((3,), items=((4, -1, -2),), in_shape=(5,)),
            case((2,), items=(1, (0, 4, 2)), in_shape=(3, 4))],
    doc="zeros of in_shape with ct written at items: the transpose of index",
))


register(Primitive(
    "index_add", lambda base, ct, items: (base[0], FLOAT), impl=_index_add,
    inplace_impl=_index_add_inplace,
    xla=_index_add_xla,
    jvp=lambda p, t, out, items: _index_add_jvp(p, t, items),
    vjp=lambda p, out, ct, items: [ct, apply("index", ct, items=items)], taylor=linear, sparsity=SELECT,
    params={"items": ITEMS},
    sample=[case((4,), (2,), items=((1, 3, 1),)), case((5,), (3,), items=((4, -1, -2),)),
            case((3, 4), (2,), items=(1, (0, 4, 2)))],
    doc="base + index_scatter(ct): the accumulation of slice cotangents without a zero array per slice",
))


def _index_add_jvp(p, t, items):
    tb, tc = t
    if tc is None:
        return tb
    batch = tc.shape[: len(tc.shape) - len(p[1].shape)]
    base = tb if tb is not None else nullary(tc, "zeros", shape=batch + p[0].shape)
    return apply("index_add", base, tc, items=items)


def normalize_items(shape, items, where=""):
    """Check and normalise ints/slices against ``shape`` (raises IndexOutOfRange)."""
    out = []
    for axis, (item, n) in enumerate(zip(items, shape)):
        if isinstance(item, slice):
            out.append(item.indices(n))
        else:
            i = int(item)
            if not -n <= i < n:
                raise IndexOutOfRange(
                    f"index {i} is out of range for axis {axis} with size {n}{where}",
                    index=i, axis=axis, size=n)
            out.append(i % n)
    out.extend((0, n, 1) for n in shape[len(items):])
    return tuple(out)


# ---------------------------------------------------------------- gather / scatter


def _gather_shape(x, idx, axis):
    if idx[1] != INT:
        raise ShapeError("an index array must hold integers", dtype=idx[1])
    n = len(x[0])
    if not -n <= axis < 0:
        raise ShapeError(f"axis {axis + n} out of range for shape {list(x[0])}", shape=list(x[0]))
    a = axis + n
    return x[0][:a] + idx[0] + x[0][a + 1:], x[1]


def _gather(x, idx, axis):
    x = np.asarray(x)  # a rank-0 Python float of a scalar tape
    n = x.shape[axis]
    if isinstance(idx, (int, np.integer)) or np.ndim(idx) == 0:  # one index (a loop counter): a view
        i = int(idx)
        if not -n <= i < n:
            raise IndexOutOfRange(f"index {i} is out of range for an axis of size {n}", index=i, size=n)
        return x[(Ellipsis, i) + (slice(None),) * (-axis - 1)]
    if idx.size and (idx.max() >= n or idx.min() < -n):
        bad = int(idx.max()) if idx.max() >= n else int(idx.min())
        raise IndexOutOfRange(f"index {bad} in an index array is out of range for an axis of size {n}",
                              index=bad, size=n)
    return np.take(x, idx, axis=axis)


def _gather_xla(jx, x, idx, axis):
    n = x.shape[axis]
    jx.fail_if(jx.np.any((idx >= n) | (idx < -n)))  # tier 1 raises; jax would clamp
    return jx.np.take(x, jx.np.where(idx < 0, idx + n, idx), axis=axis, mode="clip")


def _scatter_add_xla(jx, ct, idx, axis, size):
    trail = -axis - 1
    shape = jx.np.shape(ct)
    k = jx.np.ndim(idx)
    lead_shape, tail = shape[: len(shape) - trail - k], shape[len(shape) - trail:]
    flat = jx.np.reshape(ct, lead_shape + (-1,) + tail)
    jx.fail_if(jx.np.any((idx >= size) | (idx < -size)))  # tier 1 raises; jax would drop
    out = jx.np.zeros(lead_shape + (size,) + tail).at[(Ellipsis, jx.np.reshape(idx, -1)) + (slice(None),) * trail]
    return out.add(flat, mode="drop")


register(Primitive(
    "gather", _gather_shape, impl=_gather, xla=_gather_xla,
    jvp=lambda p, t, out, axis: None if t[0] is None else apply("gather", t[0], p[1], axis=axis),
    vjp=lambda p, out, ct, axis: [apply("scatter_add", ct, p[1], axis=axis, size=p[0].shape[axis]), None],
    taylor=linear, sparsity=SELECT, params={"axis": AXIS},
    sample=[case((4,), ("index", (5,), 4), axis=-1), case((3, 2), ("index", (4,), 3), axis=-2),
            case((3, 2), ("index", (2, 2), 2), axis=-1), case((2, 3, 2), ("index", (3,), 3), axis=-2)],
    doc="take along one axis by an integer array (a request constant, checked when it runs)",
))


def _scatter_add_shape(ct, idx, axis, size):
    trail = -axis - 1
    k = len(idx[0])
    shape = ct[0]
    lead_shape = shape[: len(shape) - trail - k]
    return lead_shape + (size,) + shape[len(shape) - trail:], FLOAT


def _scatter_add(ct, idx, axis, size):
    ct, idx = np.asarray(ct), np.asarray(idx)
    trail = -axis - 1
    k = idx.ndim
    if k == 0:  # one index: nothing to accumulate
        out = np.zeros(ct.shape[: ct.ndim - trail] + (size,) + ct.shape[ct.ndim - trail:])
        out[(Ellipsis, int(idx)) + (slice(None),) * trail] = ct
        return out
    lead_shape = ct.shape[: ct.ndim - trail - k]
    tail = ct.shape[ct.ndim - trail:]
    out = np.zeros(lead_shape + (size,) + tail)
    flat = ct.reshape(lead_shape + (idx.size,) + tail)
    pos = len(lead_shape)
    np.add.at(np.moveaxis(out, pos, 0), idx.ravel(), np.moveaxis(flat, pos, 0))
    return out


register(Primitive(
    "scatter_add", _scatter_add_shape, impl=_scatter_add, xla=_scatter_add_xla,
    jvp=lambda p, t, out, axis, size: None if t[0] is None else apply("scatter_add", t[0], p[1], axis=axis, size=size),
    vjp=lambda p, out, ct, axis, size: [apply("gather", ct, p[1], axis=axis), None],
    taylor=linear, sparsity=("scatter_add", ()), params={"axis": AXIS, "size": SIZE},
    sample=[case((5,), ("index", (5,), 4), axis=-1, size=4), case((4, 2), ("index", (4,), 3), axis=-2, size=3),
            case((3, 2, 2), ("index", (2, 2), 2), axis=-1, size=2)],
    doc="the transpose of gather: adds, so repeated indices accumulate",
))


# ---------------------------------------------------------------- concat


def _concat_shape(*xs, axis):
    first = xs[0][0]
    n = len(first)
    if not -n <= axis < 0:
        raise ShapeError(f"axis {axis + n} out of range for shape {list(first)}", shape=list(first))
    total = 0
    for x in xs:
        s = x[0]
        if len(s) != n or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis + n):
            raise ShapeError(f"cannot concatenate shapes {list(first)} and {list(s)} along axis {axis + n}",
                             shapes=[list(first), list(s)])
        total += s[axis]
    return first[: axis + n] + (total,) + first[axis + n + 1:], result_dtype(*[x[1] for x in xs])


def _concat_jvp(p, t, out, axis):
    given = [(ti, xi) for ti, xi in zip(t, p) if ti is not None]
    if not given:
        return None
    first, xi = given[0]
    batch = first.shape[: len(first.shape) - len(xi.shape)]
    parts = [ti if ti is not None else nullary(first, "zeros", shape=batch + xi.shape) for ti, xi in zip(t, p)]
    return apply("concat", *parts, axis=axis)


def _concat_vjp(p, out, ct, axis):
    res, start = [], 0
    core_n = len(out.shape)
    for x in p:
        n = x.shape[axis]
        items = [(0, d, 1) for d in out.shape]
        items[axis + core_n] = (start, start + n, 1)
        res.append(apply("index", ct, items=tuple(items)))
        start += n
    return res


register(Primitive(
    "concat", _concat_shape,
    template=lambda args, params, avals: f"np.concatenate(({', '.join(args)},), axis={integer(params['axis'])})",
    jvp=_concat_jvp, vjp=_concat_vjp, taylor=linear, sparsity=SELECT, params={"axis": AXIS},
    sample=[case((2,), (3,), axis=-1), case((2, 3), (1, 3), axis=-2), case((2, 3), (2, 1), (2, 2), axis=-1)],
))


# ---------------------------------------------------------------- constant index tables

register(Primitive("iota", lambda n: ((n,), INT), template="np.arange({n}, dtype=np.int64)", differentiable=False,
                   taylor=constant, sparsity=ZERO, params={"n": SIZE}, sample=[case(n=4)],
                   doc="0, 1, ..., n - 1 as integers: positions for index arithmetic (it carries no derivative)"))


def _indices_shape(values, shape):
    if math.prod(shape) != len(values):
        raise ShapeError(f"{len(values)} index values do not fill shape {list(shape)}", shape=list(shape))
    return tuple(shape), INT


INDEX_VALUES = Param("index values (a tuple of ints)", lambda v: type(v) is tuple and all(type(i) is int for i in v))

register(Primitive(
    "indices", _indices_shape,
    template=lambda args, params, avals: (f"np.array({literal(params['values'])}, dtype=np.int64)"
                                          f".reshape({literal(params['shape'])})"),
    differentiable=False, taylor=constant, sparsity=ZERO, params={"values": INDEX_VALUES, "shape": SHAPE},
    sample=[case(values=(0, 2, 1), shape=(3,)), case(values=(1, 0, 0, 1), shape=(2, 2))],
    doc="a constant integer array written into the program (x[[0, 2]], the index maps of pad, diag, repeat): "
        "it carries no derivative",
))
