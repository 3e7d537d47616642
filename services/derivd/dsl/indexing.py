"""``x[...]``: numpy's basic and advanced indexing, lowered to shape primitives.

The items of a subscript are ints, slices, ``...``, ``None``/``np.newaxis``
(a new axis), static integer lists (``x[[0, 2]]``), static boolean lists (a
mask, meaning its ``nonzero()`` positions) and integer array nodes (request
constants, loop counters). With no array among them it is one ``index``
primitive. With arrays, numpy's rules (its "advanced indexing") apply: the
integers count as arrays too, every array broadcasts to one shape ``B``, and
``B`` replaces the indexed axes where they are adjacent, else goes first
(``x[3, 2:, idx]`` has shape ``B + (n - 2,)``).

Lowering: ints and slices first (``index``), then the array-indexed axes are
moved last and merged, and one ``gather`` takes the entries at the linear
index ``sum_k idx_k * stride_k``; ``gather``'s transpose is ``scatter_add``, so
repeated indices accumulate their cotangents. A static index is checked here;
an index node is checked when it runs (``arange(n)[idx]``, a gather that
refuses an index out of range and turns a negative one positive), never
clamped or wrapped.

A boolean mask selects a number of entries known only from its values. A literal
mask and a boolean request constant the program indexes with by name (``x[mask]``,
or passed to one of the program's own functions: ``mask_constants`` finds them
before lowering) are static: their values are in the input's ``InputSpec`` and
in the tape key, and they lower as the integer positions they select, with
numpy's result shape. A mask computed by the program is refused with the ways
to write it.
"""

from __future__ import annotations

import ast
import math

import numpy as np

from derivd.dsl.parse import refuse
from derivd.errors import IndexOutOfRange
from derivd.ir.graph import Node
from derivd.ops import apply, get
from derivd.ops.evaluate import eval_primitive
from derivd.ops.registry import BOOL, INT
from derivd.ops.shape import normalize_items

NEW_AXIS = object()


def subscript(lo, e: ast.Subscript, env):
    value = lo.expr(e.value, env)
    if isinstance(value, (tuple, list)):
        i = lo.static_int(lo.expr(e.slice, env), "a tuple index")
        if not -len(value) <= i < len(value):
            raise refuse(f"index {i} out of range for a tuple of {len(value)}", e, code="index_out_of_range")
        return value[i]
    if not isinstance(value, Node):
        raise refuse("cannot index a scalar constant", e, code="type_error")
    raw = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
    items = [_item(lo, r, env) for r in raw]
    return index(lo, value, items, e)


def _item(lo, r, env):
    if isinstance(r, ast.Slice):
        parts = [None if p is None else lo.static_int(lo.expr(p, env), "a slice bound")
                 for p in (r.lower, r.upper, r.step)]
        if parts[2] == 0:
            raise refuse("slice step must not be zero", r)
        return slice(*parts)
    if isinstance(r, ast.Constant) and r.value is None:
        return NEW_AXIS
    v = lo.expr(r, env)
    if v is None:
        return NEW_AXIS
    if v is Ellipsis:
        return v
    if isinstance(v, Node):
        mask = _static_mask(lo, v) if v.dtype == BOOL else None
        if mask is not None and mask.ndim == 0:
            raise refuse("a boolean is not an index (a mask has at least one axis)", r, code="type_error")
        if mask is not None:
            return ("mask", mask)
        if v.dtype == BOOL:
            raise refuse("a boolean mask computed by the program selects a number of entries known only from "
                         "its values: use where(mask, x, 0), pass the mask in `constants` and index with its "
                         "name (x[mask]), or pass the indices of its True entries as an integer constant (x[idx])",
                         r, code="unsupported_syntax")
        if v.dtype != INT:
            raise refuse("an index array must hold integers, got float64", r, code="type_error")
        return v
    if isinstance(v, list):
        if any(isinstance(i, Node) for i in _leaves(v)):
            return lo.node(v)
        arr = np.asarray(v)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype == np.bool_:
            return ("mask", arr)
        if arr.dtype.kind not in "iu":
            raise refuse("an index list must hold integers or booleans", r, code="type_error")
        return arr.astype(np.int64)
    if isinstance(v, bool):
        raise refuse("a boolean is not an index", r, code="type_error")
    return lo.static_int(v, "an index")


def mask_constants(tree: ast.Module, booleans) -> set[str]:
    """The boolean constants (of ``booleans``) the program may index with: named inside a subscript,
    or passed to one of its own functions. Only their values become part of the tape key, so a mask
    used in ``where(mask, x, 0)`` alone does not compile a new tape per mask."""
    helpers = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    places = [n.slice for n in ast.walk(tree) if isinstance(n, ast.Subscript)]
    places += [a for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
               and n.func.id in helpers for a in n.args + [k.value for k in n.keywords]]
    return {n.id for p in places for n in ast.walk(p) if isinstance(n, ast.Name) and n.id in booleans}


def _static_mask(lo, node):
    """The values of a boolean node computed from static masks and literals alone (``k``, ``k[:, 0]``,
    ``~k & j``), evaluated here; None if it reads anything else."""
    values, todo, seen, stack = {}, [], set(), [node]
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.prim == "input":
            spec = lo.specs.get(n.params["name"])
            if spec is None or spec.mask is None:
                return None
            values[n.id] = spec.mask
            continue
        if n.prim == "const":
            values[n.id] = n.params["value"]
            continue
        todo.append(n)
        stack.extend(n.inputs)
    for n in sorted(todo, key=lambda n: n.id):
        values[n.id] = eval_primitive(get(n.prim), [values[a.id] for a in n.inputs], n.params)
    return np.asarray(values[node.id], dtype=bool)


def _leaves(v):
    for i in v:
        if isinstance(i, list):
            yield from _leaves(i)
        else:
            yield i


def index(lo, x, items, e):
    # ... becomes the full slices it stands for; a mask of k dimensions indexes k axes
    if sum(1 for it in items if it is Ellipsis) > 1:
        raise refuse("an index can only have a single ellipsis (...)", e, code="unsupported_syntax")
    used = sum(it[1].ndim if isinstance(it, tuple) else 1 for it in items
               if it is not Ellipsis and it is not NEW_AXIS)
    if used > x.ndim:
        raise refuse(f"too many indices ({used}) for an array of shape {list(x.shape)}", e,
                     code="index_out_of_range")
    expanded = []
    for it in items:
        if it is Ellipsis:
            expanded.extend([slice(None)] * (x.ndim - used))
        elif isinstance(it, tuple):
            expanded.extend(_mask_positions(it[1], x.shape[len([i for i in expanded if i is not NEW_AXIS]):], e))
        else:
            expanded.append(it)
    # new axes: inserted into x first, each then indexed by a full slice
    if any(it is NEW_AXIS for it in expanded):
        shape, k = [], 0
        for it in expanded:
            if it is NEW_AXIS:
                shape.append(1)
            else:
                shape.append(x.shape[k])
                k += 1
        x = lo.lib.reshape_to(x, tuple(shape) + x.shape[k:])
        expanded = [slice(None) if it is NEW_AXIS else it for it in expanded]
    arrays = [k for k, it in enumerate(expanded) if isinstance(it, (Node, np.ndarray))]
    if not arrays:
        return _basic(lo, x, expanded)
    return _advanced(lo, x, expanded, arrays, e)


def _mask_positions(mask, shape, e):
    if mask.shape != tuple(shape[:mask.ndim]):
        raise refuse(f"a boolean index of shape {list(mask.shape)} does not match the indexed axes "
                     f"{list(shape[:mask.ndim])}", e, code="index_out_of_range")
    return [p.astype(np.int64) for p in np.nonzero(mask)]


def _basic(lo, x, items):
    norm = normalize_items(x.shape, items, where=f" of an array of shape {list(x.shape)}")
    if all(isinstance(it, tuple) and it == (0, n, 1) for it, n in zip(norm, x.shape)):
        return x
    return apply("index", x, items=norm)


def _advanced(lo, x, items, arrays, e):
    lib = lo.lib
    advanced = [k for k, it in enumerate(items) if not isinstance(it, slice)]  # ints count as arrays
    adjacent = advanced == list(range(advanced[0], advanced[-1] + 1))
    sizes = {k: x.shape[k] for k in arrays}
    # ints and slices first: y keeps one axis per slice and per array, in order
    y = _basic(lo, x, [slice(None) if k in sizes else it for k, it in enumerate(items)])
    kept = [k for k, it in enumerate(items) if not isinstance(it, int)] + list(range(len(items), x.ndim))
    where_array = [kept.index(k) for k in arrays]
    slice_axes = [i for i in range(y.ndim) if i not in where_array]
    shapes = [items[k].shape for k in arrays]
    try:
        b = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise refuse("index arrays of shapes " + " and ".join(str(list(s)) for s in shapes)
                     + " do not broadcast", e, code="shape_mismatch") from None
    # numpy's place for B: where the advanced indices were, if they were adjacent; else first
    place = sum(1 for k in slice_axes if kept[k] < advanced[0]) if adjacent else 0
    if len(arrays) == 1:
        idx = items[arrays[0]]
        if isinstance(idx, np.ndarray):
            idx = _linear(lo, y, [idx], [sizes[arrays[0]]], b, e)
        out = apply("gather", y, idx, axis=where_array[0] - y.ndim)
        first = where_array[0]
    else:
        moved = lib.permute(y, slice_axes + where_array)
        merged = lib.reshape_to(moved, moved.shape[:len(slice_axes)] + (math.prod(sizes.values()),))
        out = apply("gather", merged, _linear(lo, merged, [items[k] for k in arrays], list(sizes.values()), b, e),
                    axis=-1)
        first = len(slice_axes)
    nb = len(b)
    order = list(range(out.ndim))
    batch = order[first:first + nb]
    rest = order[:first] + order[first + nb:]
    return lib.permute(out, rest[:place] + batch + rest[place:])


def _linear(lo, like, indices, sizes, b, e):
    """``sum_k idx_k * stride_k`` over the merged axes, each index checked against its axis."""
    strides = [math.prod(sizes[k + 1:]) for k in range(len(sizes))]
    static, nodes = np.zeros(b, np.int64), []
    for idx, n, stride in zip(indices, sizes, strides):
        if isinstance(idx, np.ndarray):
            if idx.size and (idx.max() >= n or idx.min() < -n):
                bad = int(idx.max()) if idx.max() >= n else int(idx.min())
                raise IndexOutOfRange(f"index {bad} is out of range for an axis of size {n}", index=bad, size=n)
            static = static + (idx % max(n, 1)) * stride
        else:
            checked = lo.lib.checked_index(idx, n)
            nodes.append(checked if stride == 1 else checked * stride)
    out = lo.lib.table(like, np.broadcast_to(static, b)) if not nodes or static.any() else None
    for node in nodes:
        out = node if out is None else out + node
    if out.shape != b:
        out = apply("broadcast_to", out, shape=b, in_ndim=out.ndim)
    return out
