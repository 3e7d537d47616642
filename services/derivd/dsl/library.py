"""The language's functions (CONTRACT §1), each written as primitives.

Two sources, one namespace: every name a primitive declares in its
registration (``Primitive.dsl``, ops/registry.py: ``sin``, ``atan2``, ...),
and the ``f_<name>`` methods here: composites (``softmax``,
``clip``, ``outer``, ``trace``...) built from primitives, which inherit their
derivative rules. Both receive already-lowered arguments: graph nodes, or
static Python values (ints, floats, bools, tuples) for shapes, axes and loop
indices; a registered call receives this Library as ``lib`` for the helpers below.

numpy's shape and layout functions (``roll``, ``pad``, ``take_along_axis``...) are
the ``f_`` methods of dsl/layout.py, mixed in; numpy's other spellings of these
names (``np.``, ``scipy.special.``, ``absolute``, ``x.sum()``) are dsl/names.py's.
"""

from __future__ import annotations

import ast
import math

from derivd.dsl.layout import Layout
from derivd.dsl.names import ALIASES
from derivd.errors import ProgramError, ShapeError
from derivd.ops import REGISTRY, apply
from derivd.ops.registry import BOOL, FLOAT, INT, LANGUAGE, nullary

# The language's names for primitives, as their registrations declare them, and its composite
# functions (ops.registry.language): name -> call(lib, ...).
CALLS = {**LANGUAGE, **{name: call for prim in REGISTRY.values() for name, call in prim.dsl.items()}}


class Library(Layout):
    """Builds the language's functions on a lowering context ``lo`` (see lower.py); numpy's shape and
    layout functions are in dsl/layout.py, numpy's other spellings in dsl/names.py."""

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
        return name in CALLS or name in ALIASES or hasattr(self, "f_" + name)

    @staticmethod
    def names() -> set[str]:
        """Every function name of the language (for suggestions)."""
        return NAMES

    def call(self, name, args, kwargs):
        if name not in CALLS:  # a primitive that registers numpy's name itself takes it
            name = ALIASES.get(name, name)
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

    def f_where(self, c, *ab):
        if len(ab) != 2:
            raise ProgramError("where(cond) with one argument returns indices, which the language has no use "
                               "for: write where(cond, a, b), or use the mask (x * cond, sum(cond))",
                               code="bad_arguments")
        return apply("where", self.arr(c), self.arr(ab[0]), self.arr(ab[1]))

    def f_clip(self, x, a_min=None, a_max=None, *, lo=None, hi=None):
        """numpy's clip: ``minimum(maximum(x, a_min), a_max)``, so crossed bounds give ``a_max``; a bound
        may be None. Derivative 1 in x on [a_min, a_max] (bounds included), 1 in a bound beyond it."""
        a_min, a_max = (a_min if a_min is not None else lo), (a_max if a_max is not None else hi)
        if a_min is None and a_max is None:
            raise ProgramError("clip() needs a_min or a_max", code="bad_arguments")
        out = self.as_float(x)
        if a_min is not None:
            a_min = self.arr(a_min)
            out = apply("where", apply("lt", out, a_min), a_min, out)
        if a_max is not None:
            a_max = self.arr(a_max)
            out = apply("where", apply("gt", out, a_max), a_max, out)
        return out

    # numpy's arithmetic functions: the operators
    def f_add(self, a, b):
        return self.lo.binop(ast.Add(), a, b)

    def f_subtract(self, a, b):
        return self.lo.binop(ast.Sub(), a, b)

    def f_multiply(self, a, b):
        return self.lo.binop(ast.Mult(), a, b)

    def f_divide(self, a, b):
        return self.lo.binop(ast.Div(), a, b)

    def f_mod(self, a, b):
        return self.lo.binop(ast.Mod(), a, b)

    def f_negative(self, a):
        return self.lo.unary(ast.USub(), a)

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

    def f_diag(self, x, k=0):
        """A vector on the ``k``-th diagonal of a square matrix, or a matrix's ``k``-th diagonal."""
        x = self.arr(x)
        k = self.lo.static_int(k, "k")
        if x.ndim == 1:
            return self.vector_on_diagonal(x, k)
        if x.ndim == 2:
            return self.f_diagonal(x, k)
        raise ShapeError(f"diag() takes a vector or a matrix, got shape {list(x.shape)}", shape=list(x.shape))

    def f_trace(self, x, offset=0, axis1=0, axis2=1):
        return apply("sum", self.as_float(self.f_diagonal(x, offset, axis1, axis2)), axes=(-1,))

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

    def f_eye(self, n, M=None, k=0):
        n = self.shape_arg(n)[0]
        m = n if M is None else self.shape_arg(M)[0]
        k = self.lo.static_int(k, "k")
        if m == n and k == 0:
            return self.lo.graph.apply("eye", (), {"n": n})
        return self.as_float(self.tri_mask(n, m, k, "eq"))

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

    def f_array(self, x):
        """numpy's ``array(x)``/``asarray(x)``: a list of arrays stacked, an array as it is (float64)."""
        return self.as_float(x) if not isinstance(x, (int, float)) else self.arr(float(x))

    f_asarray = f_array

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
NAMES = frozenset(CALLS) | frozenset(ALIASES) | frozenset(n[2:] for n in dir(Library) if n.startswith("f_"))
