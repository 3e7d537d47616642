"""The language's functions (CONTRACT §1), each written as primitives.

Two sources, one namespace: every name a primitive declares in its
registration (``Primitive.dsl``, ops/registry.py: ``sin``, ``atan2``, ...),
and the ``f_<name>`` methods here: composites (``softmax``,
``clip``, ``outer``, ``trace``...) built from primitives, which inherit their
derivative rules. Both receive already-lowered arguments: graph nodes, or
static Python values (ints, floats, bools, tuples) for shapes, axes and loop
indices; a registered call receives this Library as ``lib`` for the helpers below.
"""

from __future__ import annotations

import math

from derivd.errors import ProgramError, ShapeError
from derivd.ops import REGISTRY, apply
from derivd.ops.registry import BOOL, FLOAT, INT, LANGUAGE, nullary

# The language's names for primitives, as their registrations declare them, and its composite
# functions (ops.registry.language): name -> call(lib, ...).
CALLS = {**LANGUAGE, **{name: call for prim in REGISTRY.values() for name, call in prim.dsl.items()}}


class Library:
    """Builds the language's functions on a lowering context ``lo`` (see lower.py)."""

    def __init__(self, lo):
        self.lo = lo

    # ------------------------------------------------------------ helpers

    def arr(self, v):
        return self.lo.node(v)

    def axes(self, x, axis) -> tuple[int, ...]:
        n = x.ndim
        if axis is None:
            return tuple(range(-n, 0))
        items = axis if isinstance(axis, tuple) else (axis,)
        out = []
        for a in items:
            a = self.lo.static_int(a, "axis")
            if not -n <= a < n:
                raise ShapeError(f"axis {a} is out of range for an array of shape {list(x.shape)}",
                                 axis=a, shape=list(x.shape))
            out.append(a - n if a >= 0 else a)
        if len(set(out)) != len(out):
            raise ShapeError(f"repeated axis in {list(items)}")
        return tuple(sorted(out))

    def axis(self, x, axis) -> int:
        """One static axis of ``x``, as the negative axis primitives take."""
        (a,) = self.axes(x, self.lo.static_int(axis, "axis"))
        return a

    def shape_arg(self, v) -> tuple[int, ...]:
        items = v if isinstance(v, tuple) else (v,)
        shape = tuple(self.lo.static_int(s, "shape") for s in items)
        if any(s < 0 for s in shape):
            raise ShapeError(f"negative dimension in shape {list(shape)}")
        return shape

    def reshape_to(self, x, shape):
        x = self.arr(x)
        if shape == x.shape:
            return x
        return apply("reshape", x, shape=shape, in_ndim=x.ndim)

    def flat(self, x):
        x = self.arr(x)
        return self.reshape_to(x, (x.size,))

    def as_float(self, x):
        x = self.arr(x)
        return x if x.dtype == FLOAT else apply("to_float", x)

    # ------------------------------------------------------------ dispatch

    def known(self, name: str) -> bool:
        return name in CALLS or hasattr(self, "f_" + name)

    def call(self, name, args, kwargs):
        registered = CALLS.get(name)
        if registered is not None:
            return registered(self, *args, **kwargs)
        fn = getattr(self, "f_" + name, None)
        if fn is None:
            return None
        return fn(*args, **kwargs)

    @staticmethod
    def arity(name, args, kwargs, n):
        if len(args) != n or kwargs:
            raise ProgramError(f"{name}() takes {n} positional argument{'s' if n > 1 else ''}",
                                   code="bad_arguments")

    # ------------------------------------------------------------ reductions

    def reduce(self, prim, x, axis, nonempty=False):
        """``prim`` over ``axis`` (an int, a tuple, None: all); ``nonempty``: an empty reduction
        (one with no identity, as max or logsumexp) is refused, named after ``prim``."""
        x = self.arr(x)
        axes = self.axes(x, axis)
        if nonempty and any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"{prim}() of an empty array (shape {list(x.shape)})", shape=list(x.shape))
        return apply(prim, x, axes=axes)

    def f_softmax(self, x, axis=-1):
        x = self.as_float(x)
        axes = self.axes(x, axis)
        from derivd.ops.reductions import expand
        # shifted by the maximum first, so the exponent is x - max - log(sum(...)) with no digits
        # lost to a large |x|; softmax is shift-invariant, so the shift's derivative cancels
        z = x - expand(apply("max", x, axes=axes), x.shape, axes)
        return apply("exp", z - expand(apply("logsumexp", z, axes=axes), x.shape, axes))

    # ------------------------------------------------------------ elementwise extras

    def f_where(self, c, a, b):
        return apply("where", self.arr(c), self.arr(a), self.arr(b))

    def f_clip(self, x, lo, hi):
        x, lo, hi = self.as_float(x), self.arr(lo), self.arr(hi)
        # derivative 1 in x on [lo, hi] (bounds included), 1 in lo below it, 1 in hi above it
        return apply("where", apply("lt", x, lo), lo, apply("where", apply("gt", x, hi), hi, x))

    # ------------------------------------------------------------ linear algebra

    def f_matmul(self, a, b):
        a, b = self.as_float(a), self.as_float(b)
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must not be scalars (shapes {list(a.shape)} and {list(b.shape)})",
                             shapes=[list(a.shape), list(b.shape)])
        a2 = self.reshape_to(a, (1,) + a.shape) if a.ndim == 1 else a
        b2 = self.reshape_to(b, b.shape + (1,)) if b.ndim == 1 else b
        if a2.shape[-1] != b2.shape[-2]:
            raise ShapeError(f"matmul: shapes {list(a.shape)} and {list(b.shape)} are not aligned",
                             shapes=[list(a.shape), list(b.shape)])
        out = apply("matmul", a2, b2)
        shape = out.shape
        if a.ndim == 1:
            shape = shape[:-2] + shape[-1:]
        if b.ndim == 1:
            shape = shape[:-1]
        return self.reshape_to(out, shape)

    def f_dot(self, a, b):
        a, b = self.as_float(a), self.as_float(b)
        if a.ndim == 0 or b.ndim == 0:
            return a * b
        if a.ndim > 2 or b.ndim > 2:
            raise ShapeError("dot() takes arrays of rank <= 2; use matmul or @ for stacks",
                             shapes=[list(a.shape), list(b.shape)])
        return self.f_matmul(a, b)

    def f_outer(self, a, b):
        a, b = self.flat(self.as_float(a)), self.flat(self.as_float(b))
        return self.reshape_to(a, (a.size, 1)) * self.reshape_to(b, (1, b.size))

    def f_transpose(self, x, axes=None):
        x = self.arr(x)
        if axes is None:
            perm = tuple(range(x.ndim))[::-1]
        else:
            items = axes if isinstance(axes, tuple) else (axes,)
            perm = tuple(self.lo.static_int(a, "axes") % max(x.ndim, 1) for a in items)
        if perm == tuple(range(x.ndim)):
            return x
        return apply("transpose", x, perm=perm)

    def f_diag(self, x):
        x = self.arr(x)
        if x.ndim == 1:
            n = x.shape[0]
            return self.reshape_to(x, (1, n)) * nullary(x, "eye", n=n)
        if x.ndim == 2:
            k = min(x.shape)
            sq = x if x.shape == (k, k) else apply("index", x, items=((0, k, 1), (0, k, 1)))
            return apply("sum", sq * nullary(x, "eye", n=k), axes=(-1,))
        raise ShapeError(f"diag() takes a vector or a matrix, got shape {list(x.shape)}", shape=list(x.shape))

    def f_trace(self, x):
        x = self.arr(x)
        if x.ndim != 2:
            raise ShapeError(f"trace() takes a matrix, got shape {list(x.shape)}", shape=list(x.shape))
        return apply("sum", self.f_diag(x), axes=(-1,))

    def square(self, name, a):
        """``a`` as floats, refused unless its last two axes are a square matrix."""
        a = self.as_float(a)
        if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
            raise ShapeError(f"{name}() takes a square matrix, got shape {list(a.shape)}", shape=list(a.shape))
        return a

    def f_slogdet(self, a):
        a = self.square("slogdet", a)
        return (apply("slogdet_sign", a), apply("logabsdet", a))

    def f_solve(self, a, b):
        a, b = self.square("solve", a), self.as_float(b)
        if b.ndim == 1:
            if b.shape[0] != a.shape[-1]:
                raise ShapeError(f"solve: shapes {list(a.shape)} and {list(b.shape)} are not aligned",
                                 shapes=[list(a.shape), list(b.shape)])
            return self.reshape_to(apply("solve", a, self.reshape_to(b, (b.shape[0], 1))), b.shape)
        return apply("solve", a, b)

    # ------------------------------------------------------------ shapes

    def f_reshape(self, x, shape):
        x = self.arr(x)
        shape = tuple(self.lo.static_int(s, "shape") for s in (shape if isinstance(shape, tuple) else (shape,)))
        if shape.count(-1) > 1:
            raise ShapeError("reshape: at most one -1 in a shape")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or x.size % known:
                raise ShapeError(f"cannot reshape an array of shape {list(x.shape)} into shape {list(shape)}",
                                 shapes=[list(x.shape), list(shape)])
            shape = tuple(x.size // known if s == -1 else s for s in shape)
        if any(s < 0 for s in shape):
            raise ShapeError(f"negative dimension in shape {list(shape)}")
        return self.reshape_to(x, shape)

    def _sequence(self, name, xs):
        if not isinstance(xs, (list, tuple)) or not xs:
            raise ProgramError(f"{name}() takes a non-empty list of arrays", code="bad_arguments")
        return [self.arr(x) for x in xs]

    def f_concat(self, xs, axis=0):
        xs = self._sequence("concat", xs)
        if xs[0].ndim == 0:
            raise ShapeError("concat() of scalars: use stack()")
        axis = self.lo.static_int(axis, "axis")
        n = xs[0].ndim
        if not -n <= axis < n:
            raise ShapeError(f"axis {axis} out of range for shape {list(xs[0].shape)}")
        if len(xs) == 1:
            return xs[0]
        return apply("concat", *xs, axis=axis - n if axis >= 0 else axis)

    f_concatenate = f_concat

    def f_stack(self, xs, axis=0):
        xs = self._sequence("stack", xs)
        axis = self.lo.static_int(axis, "axis")
        n = xs[0].ndim + 1
        if not -n <= axis < n:
            raise ShapeError(f"axis {axis} out of range for stacking arrays of shape {list(xs[0].shape)}")
        a = axis % n
        for x in xs[1:]:
            if x.shape != xs[0].shape:
                raise ShapeError(f"stack: shapes {list(xs[0].shape)} and {list(x.shape)} differ",
                                 shapes=[list(xs[0].shape), list(x.shape)])
        parts = [self.reshape_to(x, x.shape[:a] + (1,) + x.shape[a:]) for x in xs]
        return parts[0] if len(parts) == 1 else apply("concat", *parts, axis=a - n)

    def f_zeros(self, shape):
        return self.lo.graph.apply("zeros", (), {"shape": self.shape_arg(shape)})

    def f_ones(self, shape):
        return self.lo.graph.apply("ones", (), {"shape": self.shape_arg(shape)})

    def f_eye(self, n):
        return self.lo.graph.apply("eye", (), {"n": self.shape_arg(n)[0]})

    def f_arange(self, start, stop=None, step=1):
        """``arange(n)``, or numpy's ``arange(start, stop[, step])`` of static numbers, built as
        ``start + step * arange(count)`` (numpy's own values: start + i * step)."""
        if stop is None:
            return self.lo.graph.apply("arange", (), {"n": self.shape_arg(start)[0]})
        for name, v in (("start", start), ("stop", stop), ("step", step)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ProgramError(f"arange() takes static numbers; its {name} is not one", code="type_error")
        if step == 0:
            raise ProgramError("arange() step must not be zero", code="bad_arguments")
        count = max(0, math.ceil((stop - start) / step))
        out = self.lo.graph.apply("arange", (), {"n": self.lo.check_int(count)})
        if step != 1:
            out = out * float(step)
        return out + float(start) if start != 0 else out

    def f_len(self, x):
        if isinstance(x, (list, tuple)):
            return len(x)
        x = self.arr(x)
        if x.ndim == 0:
            raise ShapeError("len() of a scalar")
        return x.shape[0]


def dtype_name(dtype: str) -> str:
    return {FLOAT: "float64", INT: "int64", BOOL: "bool"}[dtype]


_twice = sorted(name for name in CALLS if hasattr(Library, "f_" + name))
if _twice:
    raise RuntimeError(f"language names both registered by a primitive and defined here: {_twice}")
