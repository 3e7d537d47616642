"""numpy's shape and layout functions, each a composition of shape primitives.

Every function here moves entries without arithmetic: it is built from
``reshape``, ``transpose``, ``broadcast_to``, ``index`` (slices), ``concat``
and ``gather`` by a constant index table (``indices``), so it inherits their
exact jvp, vjp and Taylor rules and their sparsity (each output entry reads one
input entry, or none). Being linear, none has a point of non-differentiability:
``pad``'s modes at the edges copy entries (``reflect`` mirrors without the edge
entry, ``symmetric`` with it, ``wrap`` continues from the other end), so their
derivative is the sum of the cotangents of the copies, everywhere.

Arguments follow numpy: axes may be negative, and are static integers (or
tuples of them); index lists are static; values (``fill_value``,
``constant_values``, ``linspace``'s ends) may be arrays, and are differentiated.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.errors import ProgramError, ShapeError
from derivd.ops import apply
from derivd.ops.registry import FLOAT


class Layout:
    """Mixed into the language's Library (dsl/library.py): ``self.arr``, ``self.axes`` ... are its."""

    # ------------------------------------------------------------ helpers

    def table(self, like, values) -> object:
        """A constant integer array (an index map) in ``like``'s graph."""
        values = np.asarray(values, dtype=np.int64)
        return like.graph.apply("indices", (), {"values": tuple(int(v) for v in values.ravel()),
                                                "shape": tuple(values.shape)})

    def take_static(self, x, index, axis):
        """``np.take(x, index, axis)`` for a static integer array ``index`` (already in range, non-negative).

        A vector index made of a few runs of evenly spaced positions (roll, pad, flip: two or three)
        is those strided slices joined, so no index table as long as the axis is written into the
        program; any other index is one gather by a table."""
        index = np.asarray(index, dtype=np.int64)
        axis = axis % x.ndim
        runs = _runs(index) if index.ndim == 1 else None
        if runs is not None and len(runs) <= max(4, index.size // 64):
            parts = []
            for start, step, count in runs:
                items = [(0, n, 1) for n in x.shape]
                stop = start + step * (count - 1) + (1 if step > 0 else -1)
                items[axis] = (start, stop, step)
                parts.append(self.slices(x, items))
            return self.concat_axis(parts, axis) if parts else self.slices(
                x, [(0, n, 1) if a != axis else (0, 0, 1) for a, n in enumerate(x.shape)])
        return apply("gather", x, self.table(x, index), axis=axis - x.ndim)

    def slices(self, x, items):
        if all(it == (0, n, 1) for it, n in zip(items, x.shape)):
            return x
        return apply("index", x, items=tuple(items))

    def int_list(self, v, what):
        items = v if isinstance(v, (tuple, list)) else (v,)
        return [self.lo.static_int(i, what) for i in items]

    def permute(self, x, perm):
        perm = tuple(perm)
        return x if perm == tuple(range(x.ndim)) else apply("transpose", x, perm=perm)

    def concat_axis(self, parts, axis):
        parts = [p for p in parts if p.shape[axis] > 0] or parts[:1]
        return parts[0] if len(parts) == 1 else apply("concat", *parts, axis=axis - parts[0].ndim)

    # ------------------------------------------------------------ new and removed axes

    def f_ravel(self, x):
        """numpy's ravel: the entries in C order, as a vector."""
        return self.flat(x)

    def f_expand_dims(self, x, axis):
        """numpy's expand_dims: length-1 axes inserted at ``axis`` (an int or a tuple), counted in the result."""
        x = self.arr(x)
        n = x.ndim + len(self.int_list(axis, "axis"))
        new = sorted(a % n if -n <= a < n else self._axis_error(a, n) for a in self.int_list(axis, "axis"))
        if len(set(new)) != len(new):
            raise ShapeError(f"repeated axis in {list(new)}")
        shape = list(x.shape)
        for a in new:
            shape.insert(a, 1)
        return self.reshape_to(x, tuple(shape))

    @staticmethod
    def _axis_error(a, n):
        raise ShapeError(f"axis {a} is out of range for a result of {n} dimensions", axis=a)

    def f_squeeze(self, x, axis=None):
        """numpy's squeeze: the length-1 axes removed (all, or those of ``axis``, each checked to be 1)."""
        x = self.arr(x)
        if axis is None:
            drop = [i for i, d in enumerate(x.shape) if d == 1]
        else:
            drop = [a % x.ndim for a in self.axes(x, axis)]
            bad = [a for a in drop if x.shape[a] != 1]
            if bad:
                raise ShapeError(f"squeeze: axis {bad[0]} has size {x.shape[bad[0]]}, not 1", axis=bad[0])
        return self.reshape_to(x, tuple(d for i, d in enumerate(x.shape) if i not in drop))

    def _atleast(self, xs, n):
        outs = []
        for x in xs:
            x = self.arr(x)
            shape = x.shape
            if x.ndim < n:
                shape = {0: (1,) * n, 1: ((1,) + shape + (1,))[:n] if n == 3 else (1,) + shape,
                         2: shape + (1,)}[x.ndim]
            outs.append(self.reshape_to(x, shape))
        return outs[0] if len(outs) == 1 else outs

    def f_atleast_1d(self, *xs):
        """numpy's atleast_1d: a scalar as shape (1,); one array per argument (a list of several)."""
        return self._atleast(xs, 1)

    def f_atleast_2d(self, *xs):
        """numpy's atleast_2d: (n,) as (1, n), a scalar as (1, 1)."""
        return self._atleast(xs, 2)

    def f_atleast_3d(self, *xs):
        """numpy's atleast_3d: (n,) as (1, n, 1), (m, n) as (m, n, 1), a scalar as (1, 1, 1)."""
        return self._atleast(xs, 3)

    # ------------------------------------------------------------ axis order

    def f_moveaxis(self, x, source, destination):
        """numpy's moveaxis: axes ``source`` moved to ``destination``, the others kept in order."""
        x = self.arr(x)
        src = [a % x.ndim for a in self.axes_in_order(x, source)]
        dst = [a % x.ndim for a in self.axes_in_order(x, destination)]
        if len(src) != len(dst):
            raise ShapeError("moveaxis: source and destination need the same number of axes")
        order = [i for i in range(x.ndim) if i not in src]
        for d, s in sorted(zip(dst, src)):
            order.insert(d, s)
        return self.permute(x, order)

    def axes_in_order(self, x, axis):
        """Axes as given (not sorted), each checked against ``x``."""
        return [self.axis(x, a) for a in self.int_list(axis, "axis")]

    def f_swapaxes(self, x, axis1, axis2):
        """numpy's swapaxes: two axes exchanged."""
        x = self.arr(x)
        a, b = self.axis(x, axis1) % x.ndim, self.axis(x, axis2) % x.ndim
        perm = list(range(x.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.permute(x, perm)

    def f_rollaxis(self, x, axis, start=0):
        """numpy's rollaxis: ``axis`` moved to stand before ``start``."""
        x = self.arr(x)
        a = self.axis(x, axis) % x.ndim
        start = self.lo.static_int(start, "start")
        if not -x.ndim <= start <= x.ndim:
            raise ShapeError(f"rollaxis: start {start} is out of range for {x.ndim} dimensions")
        start %= x.ndim + 1
        if a < start:
            start -= 1
        if a == start:
            return x
        order = [i for i in range(x.ndim) if i != a]
        order.insert(start, a)
        return self.permute(x, order)

    # ------------------------------------------------------------ reversal and rotation

    def f_flip(self, x, axis=None):
        """numpy's flip: reversed along ``axis`` (an int, a tuple, or None: every axis)."""
        x = self.arr(x)
        items = [(0, n, 1) for n in x.shape]
        for a in self.axes(x, axis):
            items[a] = slice(None, None, -1).indices(x.shape[a])
        return self.slices(x, items)

    def f_fliplr(self, x):
        """numpy's fliplr: reversed along axis 1."""
        x = self.arr(x)
        if x.ndim < 2:
            raise ShapeError("fliplr() takes an array of at least 2 dimensions")
        return self.f_flip(x, 1)

    def f_flipud(self, x):
        """numpy's flipud: reversed along axis 0."""
        x = self.arr(x)
        if x.ndim < 1:
            raise ShapeError("flipud() takes an array of at least 1 dimension")
        return self.f_flip(x, 0)

    def f_rot90(self, m, k=1, axes=(0, 1)):
        """numpy's rot90: rotated by 90 degrees ``k`` times in the plane of ``axes``, from the first axis
        towards the second."""
        m = self.arr(m)
        a, b = self.axes_in_order(m, axes) if len(self.int_list(axes, "axes")) == 2 else self._rot_axes()
        a, b = a % m.ndim, b % m.ndim
        if a == b:
            raise ShapeError("rot90: the two axes must differ")
        k = self.lo.static_int(k, "k") % 4
        if k == 0:
            return m
        if k == 2:
            return self.f_flip(self.f_flip(m, a), b)
        perm = list(range(m.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        if k == 1:
            return self.permute(self.f_flip(m, b), perm)
        return self.f_flip(self.permute(m, perm), b)

    @staticmethod
    def _rot_axes():
        raise ShapeError("rot90: axes must be two axes")

    def f_roll(self, x, shift, axis=None):
        """numpy's roll: entries shifted by ``shift`` along ``axis`` (ints or tuples), wrapping around; the
        flattened array when ``axis`` is None."""
        x = self.arr(x)
        if axis is None:
            s = sum(self.int_list(shift, "shift"))
            return self.reshape_to(self.f_roll(self.flat(x), s, 0), x.shape)
        shifts, axes = self.int_list(shift, "shift"), self.axes_in_order(x, axis)
        if len(shifts) == 1:
            shifts = shifts * len(axes)
        if len(axes) == 1 and len(shifts) > 1:
            axes = axes * len(shifts)
        if len(shifts) != len(axes):
            raise ShapeError("roll: shift and axis must have the same length")
        total = {}
        for s, a in zip(shifts, axes):
            total[a % x.ndim] = total.get(a % x.ndim, 0) + s
        for a, s in total.items():
            n = x.shape[a]
            if n:
                x = self.take_static(x, (np.arange(n) - s) % n, a)
        return x

    def f_broadcast_to(self, x, shape):
        """numpy's broadcast_to: ``x`` repeated along new leading axes and its length-1 axes."""
        x = self.arr(x)
        shape = self.shape_arg(shape)
        if shape == x.shape:
            return x
        return apply("broadcast_to", x, shape=shape, in_ndim=x.ndim)

    # ------------------------------------------------------------ repetition and padding

    def f_tile(self, x, reps):
        """numpy's tile: the array repeated ``reps`` times along each axis (new leading axes as needed)."""
        x = self.arr(x)
        reps = self.int_list(reps, "reps")
        if any(r < 0 for r in reps):
            raise ShapeError("tile: negative repetitions")
        d = max(len(reps), x.ndim)
        reps = [1] * (d - len(reps)) + reps
        shape = (1,) * (d - x.ndim) + x.shape
        spread = tuple(v for s in shape for v in (1, s))
        big = tuple(v for r, s in zip(reps, shape) for v in (r, s))
        y = apply("broadcast_to", self.reshape_to(x, spread), shape=big, in_ndim=len(spread))
        return self.reshape_to(y, tuple(r * s for r, s in zip(reps, shape)))

    def f_repeat(self, x, repeats, axis=None):
        """numpy's repeat: each entry repeated (a count, or one count per entry) along ``axis``, or along the
        flattened array when None."""
        x = self.arr(x)
        if axis is None:
            x, axis = self.flat(x), 0
        a = self.axis(x, axis) % x.ndim
        counts = self.int_list(repeats, "repeats")
        if any(c < 0 for c in counts):
            raise ShapeError("repeat: negative repetitions")
        n = x.shape[a]
        if len(counts) not in (1, n):
            raise ShapeError(f"repeat: {len(counts)} repetition counts for an axis of size {n}")
        if len(counts) == 1 and n != 1:  # each entry c times: a new axis after ``a``, broadcast, merged
            c = counts[0]
            spread = x.shape[:a + 1] + (1,) + x.shape[a + 1:]
            wide = x.shape[:a + 1] + (c,) + x.shape[a + 1:]
            y = apply("broadcast_to", self.reshape_to(x, spread), shape=wide, in_ndim=len(spread))
            return self.reshape_to(y, x.shape[:a] + (n * c,) + x.shape[a + 1:])
        return self.take_static(x, np.repeat(np.arange(n), counts), a)

    def f_pad(self, x, pad_width, mode="constant", constant_values=0):
        """numpy's pad: ``pad_width`` (an int, (before, after), or one pair per axis) entries added per axis, by
        ``mode``: constant (``constant_values``, which may be an array), edge, reflect, symmetric, wrap (numpy's
        index maps, so widths beyond the size repeat numpy's reflections)."""
        x = self.arr(x)
        widths = np.broadcast_to(np.asarray(self._static_nested(pad_width, "pad_width"), dtype=np.int64),
                                 (x.ndim, 2)) if x.ndim else np.zeros((0, 2), np.int64)
        if (widths < 0).any():
            raise ShapeError("pad: negative pad widths")
        if mode not in ("constant", "edge", "reflect", "symmetric", "wrap"):
            raise ProgramError(f"pad mode {mode!r} is not supported (constant, edge, reflect, symmetric, wrap)",
                               code="bad_arguments")
        for a, (before, after) in enumerate(widths):
            n = x.shape[a]
            if before == after == 0:
                continue
            if mode == "constant":
                fill = self.as_float(constant_values) if not isinstance(constant_values, (int, float)) else None
                parts = []
                for width in (before, after):
                    shape = x.shape[:a] + (int(width),) + x.shape[a + 1:]
                    block = (self.lo.graph.apply("zeros", (), {"shape": shape}) + float(constant_values)
                             if fill is None else apply("broadcast_to", fill, shape=shape, in_ndim=fill.ndim))
                    parts.append(block)
                x = self.concat_axis([parts[0], self.as_float(x), parts[1]], a)
            else:
                if n == 0:
                    raise ShapeError(f"pad mode {mode!r} cannot extend an empty axis")
                x = self.take_static(x, np.pad(np.arange(n), (int(before), int(after)), mode=mode), a)
        return x

    def _static_nested(self, v, what):
        if isinstance(v, (tuple, list)):
            return [self._static_nested(i, what) for i in v]
        return self.lo.static_int(v, what)

    def f_append(self, arr, values, axis=None):
        """numpy's append: both flattened and joined when ``axis`` is None, else joined along ``axis``."""
        arr, values = self.arr(arr), self.arr(values)
        if axis is None:
            return self.f_concat([self.flat(arr), self.flat(values)], 0)
        return self.f_concat([arr, values], axis)

    # ------------------------------------------------------------ triangles and diagonals

    def tri_mask(self, rows, cols, k, compare="ge"):
        """The mask ``j - i >= k`` (or ``compare``) over a rows x cols matrix (numpy's triu, eye), a node."""
        i = self.reshape_to(self.lo.graph.apply("arange", (), {"n": rows}), (rows, 1))
        j = self.reshape_to(self.lo.graph.apply("arange", (), {"n": cols}), (1, cols))
        return apply(compare, j - i, float(k))

    def _triangle(self, name, m, k, upper):
        m = self.as_float(m)
        if m.ndim < 1:
            raise ShapeError(f"{name}() takes an array of at least 1 dimension")
        rows, cols = (m.shape[-2], m.shape[-1]) if m.ndim > 1 else (m.shape[-1], m.shape[-1])
        k = self.lo.static_int(k, "k")
        mask = self.tri_mask(rows, cols, k if upper else k + 1)
        zero = self.lo.graph.const(0.0)
        return apply("where", mask, m, zero) if upper else apply("where", mask, zero, m)

    def f_triu(self, m, k=0):
        """numpy's triu: entries below the ``k``-th diagonal of the last two axes zeroed (a vector as a row)."""
        return self._triangle("triu", m, k, upper=True)

    def f_tril(self, m, k=0):
        """numpy's tril: entries above the ``k``-th diagonal of the last two axes zeroed."""
        return self._triangle("tril", m, k, upper=False)

    def f_diagonal(self, x, offset=0, axis1=0, axis2=1):
        """numpy's diagonal: the two axes removed, the diagonal appended last, offset above (> 0) or
        below (< 0) the main one."""
        x = self.arr(x)
        if x.ndim < 2:
            raise ShapeError(f"diagonal() takes an array of at least 2 dimensions, got shape {list(x.shape)}")
        a, b = self.axis(x, axis1) % x.ndim, self.axis(x, axis2) % x.ndim
        if a == b:
            raise ShapeError("diagonal: axis1 and axis2 must differ")
        offset = self.lo.static_int(offset, "offset")
        rest = [i for i in range(x.ndim) if i not in (a, b)]
        y = self.permute(x, rest + [a, b])
        rows, cols = x.shape[a], x.shape[b]
        start_r, start_c = max(0, -offset), max(0, offset)
        count = max(0, min(rows - start_r, cols - start_c))
        flat = self.reshape_to(y, y.shape[:-2] + (rows * cols,))
        first = start_r * cols + start_c  # the diagonal is a strided slice of the flattened matrix
        diagonal = (first, first + (count - 1) * (cols + 1) + 1, cols + 1) if count else (0, 0, 1)
        return self.slices(flat, [(0, d, 1) for d in flat.shape[:-1]] + [diagonal])

    def vector_on_diagonal(self, v, k):
        """The square matrix with ``v`` on its ``k``-th diagonal: ``v`` written at a strided slice of the
        flattened zeros (``index_scatter``), so each entry reads one entry of ``v``, or none."""
        n = v.shape[0]
        size = n + abs(k)
        if n == 0:
            return self.lo.graph.apply("zeros", (), {"shape": (size, size)})
        first = k if k >= 0 else -k * size
        flat = apply("index_scatter", self.as_float(v), items=((first, first + (n - 1) * (size + 1) + 1, size + 1),),
                     in_shape=(size * size,))
        return self.reshape_to(flat, (size, size))

    def f_diagflat(self, v, k=0):
        """numpy's diagflat: the flattened ``v`` on the ``k``-th diagonal of a square matrix."""
        return self.f_diag(self.flat(v), k)

    # ------------------------------------------------------------ splitting

    def _split(self, x, sections, axis, exact, name):
        x = self.arr(x)
        a = self.axis(x, axis) % x.ndim
        n = x.shape[a]
        if isinstance(sections, (tuple, list)):
            cuts = [min(max(c + n if c < 0 else c, 0), n) for c in self.int_list(sections, "indices")]
            bounds = list(zip([0] + cuts, cuts + [n]))
        else:
            k = self.lo.static_int(sections, "sections")
            if k <= 0:
                raise ShapeError(f"{name}: the number of sections must be positive")
            if exact and n % k:
                raise ShapeError(f"{name}: an axis of size {n} does not split into {k} equal sections")
            sizes = [n // k + 1] * (n % k) + [n // k] * (k - n % k)
            ends = np.cumsum(sizes).tolist()
            bounds = list(zip([0] + ends[:-1], ends))
        out = []
        for lo, hi in bounds:
            items = [(0, d, 1) for d in x.shape]
            items[a] = (lo, max(lo, hi), 1)
            out.append(self.slices(x, items))
        return out

    def f_split(self, x, indices_or_sections, axis=0):
        """numpy's split: a list of equal sections (an int), or of the pieces between the indices (a list)."""
        return self._split(x, indices_or_sections, axis, True, "split")

    def f_array_split(self, x, indices_or_sections, axis=0):
        """numpy's array_split: as split, the first n % k sections one longer when k does not divide n."""
        return self._split(x, indices_or_sections, axis, False, "array_split")

    def f_hsplit(self, x, indices_or_sections):
        """numpy's hsplit: split along axis 1 (axis 0 for a vector)."""
        x = self.arr(x)
        return self._split(x, indices_or_sections, 1 if x.ndim > 1 else 0, True, "hsplit")

    def f_vsplit(self, x, indices_or_sections):
        """numpy's vsplit: split along axis 0."""
        return self._split(x, indices_or_sections, 0, True, "vsplit")

    def f_dsplit(self, x, indices_or_sections):
        """numpy's dsplit: split along axis 2."""
        return self._split(x, indices_or_sections, 2, True, "dsplit")

    # ------------------------------------------------------------ stacking

    def concatenator(self, kind, items):
        """numpy's ``np.r_[a, b, ...]`` (``kind`` "r_": joined along the first axis, each item at least
        1-d) and ``np.c_[...]`` ("c_": along the last axis, each at least 2-d, a vector as a column);
        numpy's string directives ("0,2,1", "r") are not read."""
        if any(isinstance(v, str) for v in items):
            raise ProgramError(f"np.{kind}[...] with a string directive is not supported; use concatenate",
                               code="bad_arguments")
        xs = [self.as_float(float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for v in items]
        if kind == "r_":
            return self.f_concat([self._atleast([x], 1) for x in xs], 0)
        cols = [self.reshape_to(x, (x.size, 1) if x.ndim == 1 else (1, 1)) if x.ndim < 2 else x for x in xs]
        return self.f_concat(cols, -1)

    def f_hstack(self, xs):
        """numpy's hstack: joined along axis 1 (axis 0 for vectors)."""
        xs = [self._atleast([x], 1) for x in self._sequence("hstack", xs)]
        return self.f_concat(xs, 0 if xs[0].ndim == 1 else 1)

    def f_vstack(self, xs):
        """numpy's vstack (row_stack): vectors as rows, joined along axis 0."""
        return self.f_concat([self._atleast([x], 2) for x in self._sequence("vstack", xs)], 0)

    def f_dstack(self, xs):
        """numpy's dstack: joined along axis 2, each at least 3-d."""
        return self.f_concat([self._atleast([x], 3) for x in self._sequence("dstack", xs)], 2)

    def f_column_stack(self, xs):
        """numpy's column_stack: vectors as columns, joined along axis 1."""
        cols = [self.reshape_to(x, (x.size, 1)) if x.ndim < 2 else x for x in self._sequence("column_stack", xs)]
        return self.f_concat(cols, 1)

    # ------------------------------------------------------------ taking

    def f_take(self, a, indices, axis=None):
        """numpy's take: entries at ``indices`` (static ints or an integer constant) along ``axis``, or of the
        flattened array when None; a static index is checked here, a constant when it runs."""
        a = self.arr(a)
        if axis is None:
            a, axis = self.flat(a), 0
        ax = self.axis(a, axis)
        if isinstance(indices, (int, list, tuple)) and not isinstance(indices, bool):
            index = np.asarray(self._static_nested(list(indices) if isinstance(indices, tuple) else indices,
                                                   "indices"))
            n = a.shape[ax]
            if index.size and (index.max() >= n or index.min() < -n):
                bad = int(index.max()) if index.max() >= n else int(index.min())
                raise ShapeError(f"take: index {bad} is out of range for an axis of size {n}", index=bad, size=n)
            if index.ndim == 0:
                items = [(0, d, 1) for d in a.shape]
                items[ax] = int(index) % n
                return apply("index", a, items=tuple(items))
            return self.take_static(a, index % n if n else index, ax)
        indices = self.arr(indices)
        if indices.dtype == FLOAT:
            raise ProgramError("take: indices must be integers", code="type_error")
        return apply("gather", a, indices, axis=ax)

    def checked_index(self, idx, n):
        """An integer index array checked against an axis of size ``n`` when it runs (an index out of range
        is an error naming it) and made non-negative: ``arange(n)[idx]`` as a gather of integers."""
        return apply("gather", idx.graph.apply("iota", (), {"n": n}), idx, axis=-1)

    def f_take_along_axis(self, arr, indices, axis):
        """numpy's take_along_axis: along ``axis``, each position picks the entry ``indices`` names;
        the other axes of ``indices`` broadcast with ``arr``'s. One gather of the flattened array."""
        arr = self.arr(arr)
        indices = self.arr(indices)
        if indices.dtype == FLOAT:
            raise ProgramError("take_along_axis: indices must be integers", code="type_error")
        if axis is None:
            arr, axis = self.flat(arr), 0
        if indices.ndim != arr.ndim:
            raise ShapeError(f"take_along_axis: indices of {indices.ndim} dimensions for an array of {arr.ndim}")
        a = self.axis(arr, axis) % arr.ndim
        x = self.f_moveaxis(arr, a, -1)
        idx = self.f_moveaxis(indices, a, -1)
        n = x.shape[-1]
        lead_shape = tuple(np.broadcast_shapes(x.shape[:-1], idx.shape[:-1]))
        x = apply("broadcast_to", x, shape=lead_shape + (n,), in_ndim=x.ndim) if x.shape[:-1] != lead_shape else x
        idx = apply("broadcast_to", idx, shape=lead_shape + idx.shape[-1:], in_ndim=idx.ndim) \
            if idx.shape[:-1] != lead_shape else idx
        count = math.prod(lead_shape)
        rows = self.reshape_to(idx.graph.apply("iota", (), {"n": count}), lead_shape + (1,)) * n
        linear = rows + self.checked_index(idx, n)
        out = apply("gather", self.flat(x), linear, axis=-1)
        return self.f_moveaxis(out, -1, a)

    # ------------------------------------------------------------ building arrays

    def f_linspace(self, start, stop, num=50, endpoint=True):
        """numpy's values: ``start + i * step`` with ``step = (stop - start) / div``, the last one ``stop``
        exactly when ``endpoint``; ``start`` and ``stop`` may be differentiated arrays (the new axis first)."""
        num = self.lo.static_int(num, "num")
        if num < 0:
            raise ShapeError("linspace: num must be non-negative")
        div = (num - 1) if endpoint else num
        start, stop = (self.as_float(float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                       for v in (start, stop))
        shape = tuple(np.broadcast_shapes(start.shape, stop.shape))
        ramp = self.reshape_to(self.lo.graph.apply("arange", (), {"n": num}), (num,) + (1,) * len(shape))
        step = (stop - start) / float(div) if div > 0 else (stop - start) * 0.0
        out = ramp * step + start
        if endpoint and num > 1:
            head = apply("index", out, items=((0, num - 1, 1),) + tuple((0, d, 1) for d in shape))
            last = apply("broadcast_to", stop, shape=(1,) + shape, in_ndim=stop.ndim)
            out = apply("concat", head, last, axis=-len(shape) - 1)
        return out

    def f_full(self, shape, fill_value):
        """numpy's full: an array of ``shape`` holding ``fill_value`` (a number, or an array that broadcasts)."""
        shape = self.shape_arg(shape)
        if isinstance(fill_value, (int, float)) and not isinstance(fill_value, bool):
            return self.lo.graph.apply("zeros", (), {"shape": shape}) + float(fill_value)
        v = self.as_float(fill_value)
        return apply("broadcast_to", v, shape=shape, in_ndim=v.ndim)

    def f_zeros_like(self, x):
        """numpy's zeros_like: zeros of ``x``'s shape (float64)."""
        return self.f_zeros(self.arr(x).shape)

    def f_ones_like(self, x):
        """numpy's ones_like: ones of ``x``'s shape (float64)."""
        return self.f_ones(self.arr(x).shape)

    def f_full_like(self, x, fill_value):
        """numpy's full_like: ``fill_value`` in ``x``'s shape (float64)."""
        return self.f_full(self.arr(x).shape, fill_value)

    def f_select(self, condlist, choicelist, default=0):
        """numpy's select: the first true condition's choice, else ``default`` (folded from the last)."""
        if not isinstance(condlist, (list, tuple)) or not isinstance(choicelist, (list, tuple)):
            raise ProgramError("select() takes a list of conditions and a list of choices", code="bad_arguments")
        if len(condlist) != len(choicelist):
            raise ShapeError("select: condlist and choicelist must have the same length")
        out = self.as_float(default)
        for c, v in reversed(list(zip(condlist, choicelist))):
            c = self.arr(c)
            if c.dtype != "b1":
                raise ProgramError("select: conditions must be masks (comparisons)", code="type_error")
            out = apply("where", c, self.as_float(v), out)
        return out


def _runs(index: np.ndarray) -> list[tuple[int, int, int]] | None:
    """``index`` as maximal runs (start, step, count) with step +1 or -1 (a lone entry: step 1)."""
    runs, k, n = [], 0, index.size
    while k < n:
        step = int(index[k + 1] - index[k]) if k + 1 < n else 0
        if step not in (1, -1):
            step, length = 1, 1
        else:
            length = 2
            while k + length < n and index[k + length] - index[k + length - 1] == step:
                length += 1
        runs.append((int(index[k]), step, length))
        k += length
    return runs
