"""The language's functions for Python: ``dd.sin``, ``dd.sum``, ``dd.where``...

Each works on traced values (it records a call of the DSL function of the
same name, with numpy's shape rules checked in Python) and on plain numbers
and arrays (it computes with numpy). So one Python function both traces into
DSL text and runs as its own numpy reference.

``PUBLIC`` is the one list of them: the package exports exactly its names, and
``UFUNCS``/``FUNCTIONS`` send numpy's own functions on traced values to them.
Adding a function is one entry in one table: ``UNARY_NUMPY`` and
``BINARY_NUMPY`` (elementwise), ``SCANS`` (along one axis, like ``cumsum``), or,
for a function with its own shape rule, one definition marked ``@export``.

The numpy side follows the server's definitions: ``sigmoid(x) = 1/(1+e^-x)``,
``softplus(x) = log(1+e^x)``, ``relu(x) = max(x, 0)``, ``norm`` the 2-norm over
``axis`` (all axes when None), ``logsumexp``/``softmax`` shifted by the maximum
for stability, ``round`` half to even, ``cumsum`` along the flattened array
when ``axis`` is None (numpy's).
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from .trace import BINARY_PREC, Traced, active_tracer, broadcast

PUBLIC: dict = {}  # name -> function: the language's functions, as the package exports them
UFUNCS: dict = {}  # numpy ufunc -> what it does to traced values
FUNCTIONS: dict = {}  # other numpy function -> what it does to traced values


def export(*numpy_fns, method: bool = False):
    """Make ``fn`` a language function: exported as ``dd.<name>``, called for numpy's ``numpy_fns``
    on traced values, and, with ``method``, a method of traced values (``x.<name>(...)``)."""

    def register(fn):
        PUBLIC[fn.__name__] = fn
        for f in numpy_fns:
            (UFUNCS if isinstance(f, np.ufunc) else FUNCTIONS)[f] = fn
        if method:
            setattr(Traced, fn.__name__, fn)
        return fn

    return register

_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _traced(*values):
    for v in values:
        if isinstance(v, Traced):
            return v
        if isinstance(v, (list, tuple)):
            found = _traced(*v)
            if found is not None:
                return found
    return None


def _sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


def _logsumexp(x, axis=None):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.sum(np.exp(x - m), axis=axis)) + np.squeeze(m, axis=axis)


UNARY_NUMPY = {
    "abs": np.abs, "sign": np.sign, "sqrt": np.sqrt, "cbrt": np.cbrt, "exp": np.exp, "exp2": np.exp2,
    "expm1": np.expm1, "log": np.log, "log2": np.log2, "log10": np.log10, "log1p": np.log1p, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "erf": _erf, "erfc": _erfc, "sigmoid": _sigmoid, "softplus": lambda x: np.logaddexp(0.0, x),
    "relu": lambda x: np.maximum(x, 0.0), "square": np.square, "reciprocal": lambda x: 1.0 / np.asarray(x, float),
    "floor": np.floor, "ceil": np.ceil, "round": np.round,
}
BINARY_NUMPY = {"atan2": np.arctan2, "hypot": np.hypot, "maximum": np.maximum, "minimum": np.minimum,
                "pow": np.power}
UNARY_NUMPY.update({"sinc": np.sinc, "deg2rad": np.deg2rad, "rad2deg": np.rad2deg, "radians": np.radians,
                    "degrees": np.degrees})
BINARY_NUMPY.update({"logaddexp": np.logaddexp, "logaddexp2": np.logaddexp2, "fmax": np.fmax, "fmin": np.fmin,
                     "heaviside": np.heaviside})


def _unary(name):
    numpy_fn = UNARY_NUMPY[name]

    def fn(x):
        t = _traced(x)
        if t is None:
            return numpy_fn(x)
        x = t.tracer.lift(x)
        return t.tracer.call(name, (x,), x.shape)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` elementwise (the DSL's ``{name}``; numpy's on arrays)."
    return fn


def _binary(name):
    numpy_fn = BINARY_NUMPY[name]

    def fn(a, b):
        t = _traced(a, b)
        if t is None:
            return numpy_fn(a, b)
        a, b = t.tracer.lift(a), t.tracer.lift(b)
        return t.tracer.call(name, (a, b), broadcast(a, b))

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}(a, b)`` elementwise with broadcasting."
    return fn


for _name, _fn in UNARY_NUMPY.items():
    globals()[_name] = export(*([_fn] if isinstance(_fn, np.ufunc) else []))(_unary(_name))
for _name in BINARY_NUMPY:
    globals()[_name] = export()(_binary(_name))


# ---------------------------------------------------------------- selection

@export()
def where(cond, a, b):
    """``a`` where ``cond`` holds, else ``b`` (both sides are evaluated; the untaken one gets no derivative)."""
    t = _traced(cond, a, b)
    if t is None:
        return np.where(cond, a, b)
    c, a, b = (t.tracer.lift(v) for v in (cond, a, b))
    if c.dtype != "b":
        raise TypeError("where() needs a mask (a comparison) as its condition")
    return t.tracer.call("where", (c, a, b), broadcast(c, a, b))


@export()
def clip(x, a_min=None, a_max=None):
    """numpy's clip: ``minimum(maximum(x, a_min), a_max)``; either bound may be None."""
    t = _traced(x, a_min, a_max)
    if t is None:
        return np.clip(x, a_min, a_max)
    bounds = [(k, t.tracer.lift(v)) for k, v in (("a_min", a_min), ("a_max", a_max)) if v is not None]
    x = t.tracer.lift(x)
    if len(bounds) == 2:
        return t.tracer.call("clip", (x, bounds[0][1], bounds[1][1]), broadcast(x, *[b for _, b in bounds]))
    return t.tracer.call("clip", (x,), broadcast(x, *[b for _, b in bounds]), **dict(bounds))


# ---------------------------------------------------------------- reductions

def _axes(shape, axis) -> tuple[int, ...]:
    n = len(shape)
    items = range(n) if axis is None else axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        if not -n <= a < n:
            raise ValueError(f"axis {a} is out of range for shape {list(shape)}")
        out.append(a % n)
    return tuple(out)


def _reduction(name, numpy_fn):
    def fn(x, axis=None, keepdims=False):
        t = _traced(x)
        axis = tuple(axis) if isinstance(axis, list) else axis
        if t is None:
            out = numpy_fn(x, axis=axis)
            return np.reshape(out, _kept(np.shape(x), axis, True)) if keepdims else out
        x = t.tracer.lift(x)
        kwargs = {} if axis is None else {"axis": axis}
        if keepdims:
            kwargs["keepdims"] = True
        return t.tracer.call(name, (x,), _kept(x.shape, axis, keepdims), **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` over ``axis`` (an int, a tuple, or None for all axes), ``keepdims`` as numpy's."
    return fn


def _kept(shape, axis, keepdims) -> tuple[int, ...]:
    """The shape of a reduction of ``shape`` over ``axis``: those axes dropped, or 1 with ``keepdims``."""
    drop = _axes(shape, axis)
    return tuple(1 if i in drop else s for i, s in enumerate(shape) if keepdims or i not in drop)


sum = export()(_reduction("sum", np.sum))
prod = export()(_reduction("prod", np.prod))
mean = export()(_reduction("mean", np.mean))
_logsumexp_all = _reduction("logsumexp", _logsumexp)


@export()
def logsumexp(x, axis=None, b=None, keepdims=False):
    """``log(sum(b * exp(x)))`` over ``axis`` (scipy's), ``b`` broadcast against ``x``."""
    if b is None:
        return _logsumexp_all(x, axis, keepdims)
    t = _traced(x, b)
    if t is None:
        x, b = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(b, dtype=np.float64))
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        out = np.log(np.sum(b * np.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else np.squeeze(out, axis=axis)
    x, b = t.tracer.lift(x), t.tracer.lift(b)
    shape = broadcast(x, b)
    kwargs = {"axis": axis} if axis is not None else {}
    kwargs.update({"b": b, **({"keepdims": True} if keepdims else {})})
    return t.tracer.call("logsumexp", (x,), _kept(shape, axis, keepdims), **kwargs)
norm = export()(_reduction("norm", lambda x, axis=None: np.sqrt(np.sum(np.square(x), axis=axis))))
_max = _reduction("max", np.max)
_min = _reduction("min", np.min)


@export()
def max(x, *more, axis=None, keepdims=False):
    """``max(x, axis=...)`` reduces; ``max(a, b, ...)`` is elementwise, as in the language."""
    return _max(x, axis=axis, keepdims=keepdims) if not more else _fold("max", maximum, x, more)  # noqa: F821


@export()
def min(x, *more, axis=None, keepdims=False):
    return _min(x, axis=axis, keepdims=keepdims) if not more else _fold("min", minimum, x, more)  # noqa: F821


def _fold(name, pairwise, x, more):
    t = _traced(x, *more)
    if t is None:
        out = x
        for y in more:
            out = pairwise(out, y)
        return out
    args = tuple(t.tracer.lift(v) for v in (x, *more))
    return t.tracer.call(name, args, broadcast(*args))


# ---------------------------------------------------------------- scans along one axis

# name -> numpy's function: same shape, or flattened when axis is None
SCANS = {"cumsum": np.cumsum, "cumprod": np.cumprod}


def _scan(name, numpy_fn):
    def fn(x, axis=None):
        t = _traced(x)
        if t is None:
            return numpy_fn(x, axis=axis)
        x = t.tracer.lift(x)
        if axis is None:
            return t.tracer.call(name, (x,), (x.size,), x.dtype if x.dtype != "b" else "i")
        _axes(x.shape, axis)
        return t.tracer.call(name, (x,), x.shape, x.dtype if x.dtype != "b" else "i", axis=axis)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` along ``axis`` (an int), or along the flattened array when None (numpy's)."
    return fn


for _name, _fn in SCANS.items():
    globals()[_name] = export(_fn, method=True)(_scan(_name, _fn))


@export()
def softmax(x, axis=-1):
    """``exp(x - logsumexp(x, axis))``: sums to one along ``axis``."""
    t = _traced(x)
    if t is None:
        x = np.asarray(x, dtype=np.float64)
        return np.exp(x - np.expand_dims(_logsumexp(x, axis=axis), axis))
    _axes(x.shape, axis)
    return t.tracer.call("softmax", (x,), x.shape, **({} if axis == -1 else {"axis": axis}))


# ---------------------------------------------------------------- linear algebra

@export()
def matmul(a, b):
    t = _traced(a, b)
    if t is None:
        return np.matmul(a, b)
    a, b = t.tracer.lift(a), t.tracer.lift(b)
    shape = _matmul_shape(a.shape, b.shape)
    return t.tracer.node("bin", ("@", a, b), shape, "f", BINARY_PREC["@"])


def _matmul_shape(a, b):
    if not a or not b:
        raise ValueError(f"matmul: operands must not be scalars (shapes {list(a)} and {list(b)})")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: shapes {list(a)} and {list(b)} are not aligned")
    out = tuple(np.broadcast_shapes(a2[:-2], b2[:-2])) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@export()
def dot(a, b):
    t = _traced(a, b)
    if t is None:
        return np.dot(a, b)
    a, b = t.tracer.lift(a), t.tracer.lift(b)
    if a.ndim == 0 or b.ndim == 0:
        return t.tracer.call("dot", (a, b), broadcast(a, b))
    if a.ndim > 2 or b.ndim > 2:
        raise ValueError("dot() takes arrays of rank <= 2; use matmul or @ for stacks")
    return t.tracer.call("dot", (a, b), _matmul_shape(a.shape, b.shape))


@export()
def outer(a, b):
    t = _traced(a, b)
    if t is None:
        return np.outer(a, b)
    a, b = t.tracer.lift(a), t.tracer.lift(b)
    return t.tracer.call("outer", (a, b), (a.size, b.size))


@export()
def transpose(x, axes=None):
    t = _traced(x)
    if t is None:
        return np.transpose(x, axes)
    if axes is None:
        return t.tracer.call("transpose", (x,), x.shape[::-1], x.dtype)
    perm = tuple(a % x.ndim for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"transpose: {list(axes)} is not a permutation of the axes of shape {list(x.shape)}")
    return t.tracer.call("transpose", (x, tuple(axes)), tuple(x.shape[p] for p in perm), x.dtype)


@export()
def trace(x, offset=0, axis1=0, axis2=1):
    """The sum of a diagonal (``dd.trace``; the tracer itself is ``derivd_client.trace``), numpy's arguments."""
    t = _traced(x)
    if t is None:
        return np.trace(x, offset, axis1, axis2)
    shape = _numpy_shape("trace", np.trace, x, (offset, axis1, axis2), {}).shape
    extra = {k: v for k, v, d in (("offset", offset, 0), ("axis1", axis1, 0), ("axis2", axis2, 1)) if v != d}
    return t.tracer.call("trace", (x,), shape, **extra)


@export()
def diag(x, k=0):
    t = _traced(x)
    if t is None:
        return np.diag(x, k)
    if x.ndim not in (1, 2):
        raise ValueError(f"diag() takes a vector or a matrix, got shape {list(x.shape)}")
    shape = _numpy_shape("diag", np.diag, x, (k,), {}).shape
    return t.tracer.call("diag", (x,), shape, **({} if k == 0 else {"k": k}))


def _square(name, a):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name}() takes a square matrix, got shape {list(a.shape)}")


@export()
def inv(a):
    t = _traced(a)
    if t is None:
        return np.linalg.inv(a)
    _square("inv", a)
    return t.tracer.call("inv", (a,), a.shape)


@export()
def det(a):
    t = _traced(a)
    if t is None:
        return np.linalg.det(a)
    _square("det", a)
    return t.tracer.call("det", (a,), a.shape[:-2])


@export()
def slogdet(a):
    """``(sign, log|det|)`` of a square matrix."""
    t = _traced(a)
    if t is None:
        return tuple(np.linalg.slogdet(a))
    _square("slogdet", a)
    both = t.tracer.call("slogdet", (a,), None, "tuple")
    return tuple(t.tracer.node("item", (both, i), a.shape[:-2], "f", 15) for i in (0, 1))


@export()
def cholesky(a):
    t = _traced(a)
    if t is None:
        return np.linalg.cholesky(a)
    _square("cholesky", a)
    return t.tracer.call("cholesky", (a,), a.shape)


@export()
def solve(a, b):
    """``x`` with ``a @ x = b``; ``b`` a vector or a matrix."""
    t = _traced(a, b)
    if t is None:
        return np.linalg.solve(a, b)
    a, b = t.tracer.lift(a), t.tracer.lift(b)
    _square("solve", a)
    if b.shape[0] != a.shape[-1]:
        raise ValueError(f"solve: shapes {list(a.shape)} and {list(b.shape)} are not aligned")
    return t.tracer.call("solve", (a, b), b.shape)


# ---------------------------------------------------------------- shapes

@export()
def reshape(x, shape):
    t = _traced(x)
    if t is None:
        return np.reshape(x, shape)
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if dims.count(-1) > 1:
        raise ValueError("reshape: at most one -1 in a shape")
    known = math.prod(d for d in dims if d != -1)
    if -1 in dims:
        if known == 0 or x.size % known:
            raise ValueError(f"cannot reshape shape {list(x.shape)} into {list(dims)}")
        dims = tuple(x.size // known if d == -1 else d for d in dims)
    elif known != x.size:
        raise ValueError(f"cannot reshape shape {list(x.shape)} into {list(dims)}")
    return t.tracer.call("reshape", (x, dims if len(dims) != 1 else dims[0]), dims, x.dtype)


@export()
def concat(xs, axis=0):
    """Join arrays along an existing axis."""
    t = _traced(*xs)
    if t is None:
        return np.concatenate(xs, axis=axis)
    xs = [t.tracer.lift(x) for x in xs]
    first = xs[0].shape
    if not first:
        raise ValueError("concat() of scalars: use stack()")
    a = _axes(first, axis)[0]
    for x in xs[1:]:
        if len(x.shape) != len(first) or any(s != f for i, (s, f) in enumerate(zip(x.shape, first)) if i != a):
            raise ValueError(f"concat: shapes {list(first)} and {list(x.shape)} differ off axis {axis}")
    shape = first[:a] + (builtins.sum(x.shape[a] for x in xs),) + first[a + 1:]
    return t.tracer.call("concat", (xs,), shape, **({} if axis == 0 else {"axis": axis}))


concatenate = PUBLIC["concatenate"] = concat


@export()
def stack(xs, axis=0):
    """Join arrays of one shape along a new axis."""
    t = _traced(*xs)
    if t is None:
        return np.stack(xs, axis=axis)
    xs = [t.tracer.lift(x) for x in xs]
    first = xs[0].shape
    if any(x.shape != first for x in xs):
        raise ValueError("stack: arrays must share one shape, got " + ", ".join(str(list(x.shape)) for x in xs))
    a = _axes(first + (1,), axis)[0]
    shape = first[:a] + (len(xs),) + first[a:]
    return t.tracer.call("stack", (xs,), shape, **({} if axis == 0 else {"axis": axis}))


def _creation(name, numpy_fn, shape_of):
    def fn(n):
        tracer = active_tracer()
        if tracer is None:
            return numpy_fn(n)
        return tracer.call(name, (tuple(n) if isinstance(n, list) else n,), shape_of(n))

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}``: written into the DSL while tracing, numpy's otherwise."
    return fn


def _dims(n):
    return tuple(n) if isinstance(n, (tuple, list)) else (n,)


zeros = export()(_creation("zeros", np.zeros, _dims))
ones = export()(_creation("ones", np.ones, _dims))
eye = export()(_creation("eye", lambda n: np.eye(n), lambda n: (n, n)))
arange = export()(_creation("arange", lambda n: np.arange(n, dtype=np.float64), lambda n: (n,)))


# ---------------------------------------------------------------- numpy's names for the same operations

def _ufuncs():
    """numpy's ufuncs for the operators and for the functions under other names."""
    return {
        np.add: lambda a, b: _op(a, b, "__add__", "__radd__"),
        np.subtract: lambda a, b: _op(a, b, "__sub__", "__rsub__"),
        np.multiply: lambda a, b: _op(a, b, "__mul__", "__rmul__"),
        np.true_divide: lambda a, b: _op(a, b, "__truediv__", "__rtruediv__"),
        np.floor_divide: lambda a, b: _op(a, b, "__floordiv__", "__rfloordiv__"),
        np.remainder: lambda a, b: _op(a, b, "__mod__", "__rmod__"),
        np.power: lambda a, b: _op(a, b, "__pow__", "__rpow__"),
        np.matmul: matmul,
        np.negative: lambda a: -a,
        np.less: lambda a, b: _op(a, b, "__lt__", "__gt__"),
        np.less_equal: lambda a, b: _op(a, b, "__le__", "__ge__"),
        np.greater: lambda a, b: _op(a, b, "__gt__", "__lt__"),
        np.greater_equal: lambda a, b: _op(a, b, "__ge__", "__le__"),
        np.equal: lambda a, b: _op(a, b, "__eq__", "__eq__"),
        np.not_equal: lambda a, b: _op(a, b, "__ne__", "__ne__"),
        np.logical_and: lambda a, b: _op(a, b, "__and__", "__rand__"),
        np.bitwise_and: lambda a, b: _op(a, b, "__and__", "__rand__"),
        np.logical_or: lambda a, b: _op(a, b, "__or__", "__ror__"),
        np.bitwise_or: lambda a, b: _op(a, b, "__or__", "__ror__"),
        np.logical_not: lambda a: ~a,
        np.invert: lambda a: ~a,
        np.arctan2: globals()["atan2"], np.hypot: globals()["hypot"],
        np.maximum: globals()["maximum"], np.minimum: globals()["minimum"],
        np.absolute: globals()["abs"], np.fabs: globals()["abs"], np.rint: globals()["round"],
    }


def _op(a, b, method, reflected):
    if isinstance(a, Traced):
        return getattr(a, method)(b)
    return getattr(b, reflected)(a)


UFUNCS.update(_ufuncs())
FUNCTIONS.update({
    np.sum: lambda x, axis=None: sum(x, axis), np.prod: lambda x, axis=None: prod(x, axis),
    np.mean: lambda x, axis=None: mean(x, axis), np.max: lambda x, axis=None: max(x, axis=axis),
    np.min: lambda x, axis=None: min(x, axis=axis), np.where: where, np.clip: clip, np.dot: dot,
    np.outer: outer, np.transpose: transpose, np.trace: trace, np.diag: diag, np.reshape: reshape,
    np.concatenate: lambda xs, axis=0: concat(xs, axis), np.stack: stack, np.linalg.inv: inv,
    np.linalg.det: det, np.linalg.slogdet: slogdet, np.linalg.cholesky: cholesky, np.linalg.solve: solve,
})
if hasattr(np, "amax"):
    FUNCTIONS.update({np.amax: FUNCTIONS[np.max], np.amin: FUNCTIONS[np.min]})


def _two_norm(x, ord, axis):
    if ord not in (None, 2) or (ord == 2 and axis is None and x.ndim > 1):
        raise TypeError("only the 2-norm (np.linalg.norm(x) or norm over an axis) is in the language")
    return norm(x, axis)


# ---------------------------------------------------------------- statistics, order, contractions
#
# numpy's functions of the same names and arguments; the traced side checks numpy's shape rules.


def _call(name, numpy_fn, args, shape, kwargs, defaults, arrays=None):
    """numpy's ``numpy_fn`` on plain values; on traced ones the DSL call ``name`` giving ``shape``
    (of the lifted arrays, the first ``arrays`` arguments: all by default), with the keyword
    arguments that differ from their ``defaults`` written out."""
    t = _traced(*args, *kwargs.values())
    if t is None:
        return numpy_fn(*args, **kwargs)
    n = len(args) if arrays is None else arrays
    args = tuple(t.tracer.lift(a) for a in args[:n]) + tuple(args[n:])
    given = {k: t.tracer.lift(v) if isinstance(v, np.ndarray) else v
             for k, v in kwargs.items() if not _is_default(v, defaults.get(k))}
    return t.tracer.call(name, args, shape(*args), **given)


def _is_default(v, default) -> bool:
    if v is None or default is None:
        return v is default
    return type(v) is type(default) and isinstance(v, (bool, int, float, str, tuple)) and v == default


def _statistic(name, numpy_fn, **defaults):
    """A reduction with numpy's extra arguments (``ddof``, ``weights``...): the shape of a reduction."""

    def fn(x, axis=None, **kwargs):
        unknown = set(kwargs) - set(defaults) - {"keepdims"}
        if unknown:
            raise TypeError(f"{name}() got unexpected keyword argument(s) {sorted(unknown)}")
        kwargs = {"axis": tuple(axis) if isinstance(axis, list) else axis, **kwargs}
        return _call(name, numpy_fn, (x,), lambda x: _kept(x.shape, kwargs["axis"], kwargs.get("keepdims", False)),
                     kwargs, {"axis": None, "keepdims": False, **defaults})

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy's ``{name}`` over ``axis`` (an int, a tuple, None), with ``keepdims``."
    return fn


var = export(np.var)(_statistic("var", np.var, ddof=0))
std = export(np.std)(_statistic("std", np.std, ddof=0))
ptp = export(np.ptp)(_statistic("ptp", np.ptp))
median = export(np.median)(_statistic("median", np.median))
average = export(np.average)(_statistic("average", np.average, weights=None))


def _quantile(name, numpy_fn):
    def fn(x, q, axis=None, keepdims=False):
        qs = tuple(q) if isinstance(q, (list, tuple, np.ndarray)) else None
        q = list(np.asarray(q, dtype=np.float64).tolist()) if qs is not None else q
        axis = tuple(axis) if isinstance(axis, list) else axis
        return _call(name, numpy_fn, (x, q), lambda x, q: ((len(qs),) if qs is not None else ())
                     + _kept(x.shape, axis, keepdims), {"axis": axis, "keepdims": keepdims},
                     {"axis": None, "keepdims": False}, arrays=1)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy's ``{name}`` (linear interpolation), ``q`` a number or a list of numbers."
    return fn


quantile = export(np.quantile)(_quantile("quantile", np.quantile))
percentile = export(np.percentile)(_quantile("percentile", np.percentile))


@export(np.sort)
def sort(x, axis=-1):
    """Ascending along ``axis`` (None: the flattened array); ties keep their order."""
    return _call("sort", np.sort, (x,), lambda x: (x.size,) if axis is None else (_axes(x.shape, axis), x.shape)[1],
                 {"axis": axis}, {"axis": -1})


@export(np.diff)
def diff(x, n=1, axis=-1):
    """The ``n``-th forward difference along ``axis``."""
    def shape(x):
        a = _axes(x.shape, axis)[0]
        return x.shape[:a] + (builtins.max(x.shape[a] - n, 0),) + x.shape[a + 1:]

    return _call("diff", np.diff, (x,), shape, {"n": n, "axis": axis}, {"n": 1, "axis": -1})


@export(np.nan_to_num)
def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    """NaN, +inf, -inf replaced (numpy's defaults: 0 and the largest finite floats)."""
    return _call("nan_to_num", np.nan_to_num, (x,), lambda x: x.shape,
                 {"nan": nan, "posinf": posinf, "neginf": neginf}, {"nan": 0.0, "posinf": None, "neginf": None})


def _einsum_shape(subscripts, shapes):
    """numpy's result shape of ``einsum(subscripts, ...)`` for operands of ``shapes``."""
    lhs, arrow, rhs = subscripts.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} terms for {len(shapes)} operands")
    sizes, dots, counts = {}, [], {}
    for term, shape in zip(terms, shapes):
        explicit = term.replace("...", "")
        width = len(shape) - len(explicit)
        if width < 0 or (width and "..." not in term):
            raise ValueError(f"einsum: term {term!r} does not match shape {list(shape)}")
        dots.append(tuple(shape[term.index("..."):term.index("...") + width]) if "..." in term else ())
        rest = shape[:term.index("...")] + shape[term.index("...") + width:] if "..." in term else shape
        for c, d in zip(explicit, rest):
            if sizes.get(c, 1) not in (1, d) and d != 1:
                raise ValueError(f"einsum: letter {c!r} has sizes {sizes[c]} and {d}")
            sizes[c] = builtins.max(sizes.get(c, 1), d)
            counts[c] = counts.get(c, 0) + 1
    dot_shape = tuple(np.broadcast_shapes(*dots)) if dots else ()
    if not arrow:
        return dot_shape + tuple(sizes[c] for c in sorted(c for c, k in counts.items() if k == 1))
    before, _, after = rhs.partition("...")
    return (tuple(sizes[c] for c in before) + (dot_shape if "..." in rhs else ())
            + tuple(sizes[c] for c in after))


@export(np.einsum)
def einsum(subscripts, *operands):
    """numpy's einsum: any subscripts, ``...``, implicit output."""
    t = _traced(*operands)
    if t is None:
        return np.einsum(subscripts, *operands)
    xs = tuple(t.tracer.lift(x) for x in operands)
    return t.tracer.call("einsum", (subscripts,) + xs, _einsum_shape(subscripts, [x.shape for x in xs]))


@export(np.tensordot)
def tensordot(a, b, axes=2):
    """Sum over ``axes`` (an int N: a's last N with b's first N; or a pair of axis lists)."""
    def shape(a, b):
        if isinstance(axes, int):
            pa, pb = list(range(a.ndim - axes, a.ndim)), list(range(axes))
        else:
            pa, pb = ([v] if isinstance(v, int) else list(v) for v in axes)
            pa, pb = [p % a.ndim for p in pa], [p % b.ndim for p in pb]
        if any(a.shape[i] != b.shape[j] for i, j in zip(pa, pb)) or len(pa) != len(pb):
            raise ValueError(f"tensordot: shapes {list(a.shape)} and {list(b.shape)} do not match on {axes}")
        return (tuple(d for i, d in enumerate(a.shape) if i not in pa)
                + tuple(d for j, d in enumerate(b.shape) if j not in pb))

    written = axes if isinstance(axes, int) else tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in axes)
    return _call("tensordot", np.tensordot, (a, b), shape, {"axes": written}, {"axes": 2})


@export(np.inner)
def inner(a, b):
    """The sum over the last axes of both."""
    return _call("inner", np.inner, (a, b), lambda a, b: a.shape[:-1] + b.shape[:-1] if a.ndim and b.ndim
                 else broadcast(a, b), {}, {})


@export(np.kron)
def kron(a, b):
    """The Kronecker product."""
    def shape(a, b):
        n = builtins.max(a.ndim, b.ndim)
        sa, sb = (1,) * (n - a.ndim) + a.shape, (1,) * (n - b.ndim) + b.shape
        return tuple(x * y for x, y in zip(sa, sb))

    return _call("kron", np.kron, (a, b), shape, {}, {})


@export(np.cross)
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors (2-vectors: the z-component) along the given axes."""
    def shape(a, b):
        return np.cross(np.zeros(a.shape), np.zeros(b.shape), axisa, axisb, axisc, axis).shape

    return _call("cross", np.cross, (a, b), shape, {"axisa": axisa, "axisb": axisb, "axisc": axisc, "axis": axis},
                 {"axisa": -1, "axisb": -1, "axisc": -1, "axis": None})


UFUNCS.update({np.logaddexp: PUBLIC["logaddexp"], np.logaddexp2: PUBLIC["logaddexp2"], np.fmax: PUBLIC["fmax"],
               np.fmin: PUBLIC["fmin"], np.heaviside: PUBLIC["heaviside"]})
FUNCTIONS.update({np.sinc: PUBLIC["sinc"], np.sum: sum, np.prod: prod, np.mean: mean,
                  np.max: lambda x, axis=None, keepdims=False: max(x, axis=axis, keepdims=keepdims),
                  np.min: lambda x, axis=None, keepdims=False: min(x, axis=axis, keepdims=keepdims)})
if hasattr(np, "amax"):
    FUNCTIONS.update({np.amax: FUNCTIONS[np.max], np.amin: FUNCTIONS[np.min]})


# ---------------------------------------------------------------- numpy's shape and layout functions

# name -> numpy's function: the array first, then static arguments (ints, tuples, strings); the traced
# shape is numpy's own, found by running it on a zero-stride stand-in of the array
LAYOUT = {
    "roll": np.roll, "flip": np.flip, "fliplr": np.fliplr, "flipud": np.flipud, "rot90": np.rot90,
    "tile": np.tile, "repeat": np.repeat, "pad": np.pad, "triu": np.triu, "tril": np.tril,
    "diagonal": np.diagonal, "expand_dims": np.expand_dims, "squeeze": np.squeeze, "moveaxis": np.moveaxis,
    "swapaxes": np.swapaxes, "rollaxis": np.rollaxis, "ravel": np.ravel, "atleast_1d": np.atleast_1d,
    "atleast_2d": np.atleast_2d, "atleast_3d": np.atleast_3d, "broadcast_to": np.broadcast_to,
    "diagflat": np.diagflat,
}
# the same, returning a list of arrays
SPLITS = {"split": np.split, "array_split": np.array_split, "hsplit": np.hsplit, "vsplit": np.vsplit,
          "dsplit": np.dsplit}


def _stand_in(x):
    return np.broadcast_to(np.zeros((), dtype=np.int8), x.shape)


def _numpy_shape(name, numpy_fn, x, args, kwargs):
    try:
        return numpy_fn(_stand_in(x), *args, **kwargs)
    except (ValueError, IndexError, TypeError) as e:
        raise ValueError(f"{name}: {e} (array of shape {list(x.shape)})") from None


def _layout(name, numpy_fn):
    def fn(x, *args, **kwargs):
        t = _traced(x)
        if t is None:
            return numpy_fn(x, *args, **kwargs)
        x = t.tracer.lift(x)
        shape = _numpy_shape(name, numpy_fn, x, args, kwargs).shape
        return t.tracer.call(name, (x, *args), shape, x.dtype, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy's ``{name}`` (the DSL's ``{name}``): it moves entries, so its derivative moves cotangents."
    return fn


def _splitting(name, numpy_fn):
    def fn(x, *args, **kwargs):
        t = _traced(x)
        if t is None:
            return numpy_fn(x, *args, **kwargs)
        x = t.tracer.lift(x)
        parts = _numpy_shape(name, numpy_fn, x, args, kwargs)
        both = t.tracer.call(name, (x, *args), None, "tuple", **kwargs)
        return [t.tracer.node("item", (both, i), p.shape, x.dtype, 15) for i, p in enumerate(parts)]

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy's ``{name}``: a list of arrays."
    return fn


for _name, _fn in LAYOUT.items():
    globals()[_name] = export(_fn)(_layout(_name, _fn))
partition = export(np.partition)(_layout("partition", np.partition))
partition.__doc__ = "numpy's ``partition(x, kth, axis=-1)``, in numpy's order (the DSL's ``partition``)."


@export(np.gradient)
def gradient(f, *varargs, axis=None, edge_order=1):
    """numpy's ``gradient``: central differences inside, one-sided at the ends; scalar spacings;
    one array for one axis, a list for several."""
    t = _traced(f)
    if t is None:
        return np.gradient(f, *varargs, axis=axis, edge_order=edge_order)
    x = t.tracer.lift(f)
    try:
        parts = np.gradient(np.zeros(x.shape), *varargs, axis=axis, edge_order=edge_order)
    except (ValueError, IndexError, TypeError) as e:
        raise ValueError(f"gradient: {e} (array of shape {list(x.shape)})") from None
    kwargs = {k: v for k, v, default in (("axis", axis, None), ("edge_order", edge_order, 1)) if v != default}
    if isinstance(parts, np.ndarray):
        return t.tracer.call("gradient", (x, *varargs), parts.shape, x.dtype, **kwargs)
    both = t.tracer.call("gradient", (x, *varargs), None, "tuple", **kwargs)
    return [t.tracer.node("item", (both, i), p.shape, x.dtype, 15) for i, p in enumerate(parts)]
for _name, _fn in SPLITS.items():
    globals()[_name] = export(_fn)(_splitting(_name, _fn))


@export(np.take)
def take(a, indices, axis=None):
    t = _traced(a, indices)
    if t is None:
        return np.take(a, indices, axis=axis)
    a = t.tracer.lift(a)
    idx = indices if isinstance(indices, (int, np.integer)) else t.tracer.lift(np.asarray(indices)
                                                                          if isinstance(indices, list) else indices)
    probe = np.zeros(idx.shape, dtype=np.intp) if isinstance(idx, Traced) else indices
    shape = np.take(_stand_in(a), probe, axis=axis).shape
    return t.tracer.call("take", (a, idx), shape, a.dtype, **({} if axis is None else {"axis": axis}))


@export(np.take_along_axis)
def take_along_axis(arr, indices, axis):
    t = _traced(arr, indices)
    if t is None:
        return np.take_along_axis(arr, indices, axis)
    arr, idx = t.tracer.lift(arr), t.tracer.lift(indices)
    if idx.dtype != "i":
        raise IndexError("take_along_axis: indices must be integers")
    shape = np.take_along_axis(_stand_in(arr), np.zeros(idx.shape, dtype=np.intp), axis).shape
    return t.tracer.call("take_along_axis", (arr, idx, axis), shape, arr.dtype)


@export(np.full)
def full(shape, fill_value):
    tracer = active_tracer()
    if tracer is None or not isinstance(fill_value, Traced):
        if tracer is None:
            return np.full(shape, fill_value, dtype=np.float64)
        return tracer.call("full", (tuple(shape) if isinstance(shape, list) else shape, fill_value), _dims(shape))
    return tracer.call("full", (tuple(shape) if isinstance(shape, list) else shape, fill_value), _dims(shape))


def _like(name, numpy_fn, with_fill=False):
    def fn(x, *fill):
        t = _traced(x, *fill)
        if t is None:
            return numpy_fn(x, *fill, dtype=np.float64)
        return t.tracer.call(name, (t.tracer.lift(x), *fill), x.shape)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy's ``{name}``: an array of ``x``'s shape."
    return fn


zeros_like = export(np.zeros_like)(_like("zeros_like", np.zeros_like))
ones_like = export(np.ones_like)(_like("ones_like", np.ones_like))
full_like = export(np.full_like)(_like("full_like", np.full_like))


@export(np.linspace)
def linspace(start, stop, num=50, endpoint=True):
    t = _traced(start, stop)
    if t is None:
        return np.linspace(start, stop, num, endpoint=endpoint)
    start, stop = t.tracer.lift(start), t.tracer.lift(stop)
    return t.tracer.call("linspace", (start, stop, num), (num,) + broadcast(start, stop),
                         **({} if endpoint else {"endpoint": False}))


@export(np.select)
def select(condlist, choicelist, default=0):
    t = _traced(condlist, choicelist, default)
    if t is None:
        return np.select(condlist, choicelist, default)
    conds = [t.tracer.lift(c) for c in condlist]
    choices = [t.tracer.lift(c) for c in choicelist]
    default = t.tracer.lift(default)
    return t.tracer.call("select", (conds, choices, default), broadcast(*conds, *choices, default))


def _stacking(name, numpy_fn):
    def fn(xs):
        t = _traced(*xs)
        if t is None:
            return numpy_fn(xs)
        xs = [t.tracer.lift(x) for x in xs]
        shape = numpy_fn([_stand_in(x) for x in xs]).shape
        return t.tracer.call(name, (xs,), shape)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy's ``{name}``."
    return fn


for _name, _fn in {"hstack": np.hstack, "vstack": np.vstack, "dstack": np.dstack,
                   "column_stack": np.column_stack}.items():
    globals()[_name] = export(_fn)(_stacking(_name, _fn))


# ---------------------------------------------------------------- numpy's array methods on traced values

try:  # scipy.special's ufuncs on traced values, where scipy is installed (the SDK does not need it)
    import scipy.special as _special
except ImportError:
    _special = None
if _special is not None:
    UFUNCS.update({_special.expit: PUBLIC["sigmoid"], _special.erf: PUBLIC["erf"], _special.erfc: PUBLIC["erfc"]})


def _positional_axis(fn):
    return lambda x, axis=None: fn(x, axis=axis)


METHOD_FORMS = {  # a method whose arguments differ from the function's
    "reshape": lambda x, *shape: reshape(x, shape[0] if len(shape) == 1 else shape),
    "transpose": lambda x, *axes: transpose(x, (axes[0] if len(axes) == 1 else axes) if axes else None),
    "flatten": lambda x: PUBLIC["ravel"](x),
    "astype": lambda x, dtype: _astype(x, dtype),
    "max": _positional_axis(max), "min": _positional_axis(min),
}


def _astype(x, dtype):
    if np.dtype(dtype) != np.float64:
        raise TypeError("astype() converts to float only: integer or boolean values have no derivative")
    return x if x.dtype == "f" else x * 1.0


def method(name):
    """numpy's array method ``name`` on a traced value: the SDK function of that name, array first."""
    if name in METHOD_FORMS:
        return METHOD_FORMS[name]
    if name in PUBLIC and hasattr(np.ndarray, name):
        return PUBLIC[name]
    return None


# ---------------------------------------------------------------- scipy.special

try:
    import scipy.special as _sp
except ImportError:  # the SDK needs only numpy: without scipy these trace, but do not compute on plain arrays
    _sp = None


def _special(name):
    if _sp is not None:
        return getattr(_sp, name)

    def missing(*args, **kwargs):
        raise ImportError(f"{name}() on plain arrays needs scipy (traced values need nothing)")

    return missing


for _name in ("gammaln", "gamma", "digamma", "psi", "gammasgn", "erfinv", "erfcinv", "logit", "log_expit", "entr",
              "ndtr", "log_ndtr", "ndtri", "i0", "i1", "i0e", "i1e", "j0", "j1", "y0", "y1", "rgamma"):
    UNARY_NUMPY[_name] = _special(_name)
    globals()[_name] = export(*([UNARY_NUMPY[_name]] if isinstance(UNARY_NUMPY[_name], np.ufunc) else []))(
        _unary(_name))
for _name in ("beta", "betaln", "xlogy", "xlog1py", "rel_entr", "iv", "ive", "jn", "yn", "gammainc", "gammaincc"):
    BINARY_NUMPY[_name] = _special(_name)
    globals()[_name] = export(*([BINARY_NUMPY[_name]] if isinstance(BINARY_NUMPY[_name], np.ufunc) else []))(
        _binary(_name))


@export(*([_sp.betainc] if _sp is not None else []))
def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b); a and b constants (no derivative)."""
    t = _traced(a, b, x)
    if t is None:
        return _special("betainc")(a, b, x)
    a, b, x = t.tracer.lift(a), t.tracer.lift(b), t.tracer.lift(x)
    return t.tracer.call("betainc", (a, b, x), broadcast(a, b, x))


@export()
def polygamma(n, x):
    """The n-th derivative of digamma; ``n`` a literal integer."""
    t = _traced(x)
    if t is None:
        return _special("polygamma")(n, x)
    if isinstance(n, Traced) or int(n) != n or n < 0:
        raise ValueError("polygamma(n, x) takes a literal integer order n >= 0")
    x = t.tracer.lift(x)
    return t.tracer.call("polygamma", (int(n), x), x.shape)


@export()
def multigammaln(a, d):
    """log of the multivariate gamma function; ``d`` a literal integer."""
    t = _traced(a)
    if t is None:
        return _special("multigammaln")(a, d)
    a = t.tracer.lift(a)
    return t.tracer.call("multigammaln", (a, int(d)), a.shape)


# ---------------------------------------------------------------- more linear algebra


def _square_function(name, numpy_fn):
    def fn(a):
        t = _traced(a)
        if t is None:
            return numpy_fn(a)
        _square(name, a)
        return t.tracer.call(name, (a,), a.shape)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` of a square matrix (or a stack of them)."
    return fn


def _scipy_linalg(name):
    def fn(a):
        import scipy.linalg

        return getattr(scipy.linalg, name)(a)

    return fn


expm = export()(_square_function("expm", _scipy_linalg("expm")))
sqrtm = export()(_square_function("sqrtm", _scipy_linalg("sqrtm")))
logm = export()(_square_function("logm", _scipy_linalg("logm")))


@export()
def solve_sylvester(a, b, q):
    """scipy.linalg's solve_sylvester: X with A X + X B = Q (the DSL's ``solve_sylvester``)."""
    t = _traced(a, b, q)
    if t is None:
        import scipy.linalg

        return scipy.linalg.solve_sylvester(a, b, q)
    a, b, q = t.tracer.lift(a), t.tracer.lift(b), t.tracer.lift(q)
    if a.ndim < 2 or b.ndim < 2 or q.shape[-2:] != (a.shape[-1], b.shape[-1]):
        raise ValueError(f"solve_sylvester: shapes {list(a.shape)}, {list(b.shape)}, {list(q.shape)} do not fit")
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2], q.shape[:-2])
    return t.tracer.call("solve_sylvester", (a, b, q), tuple(lead) + q.shape[-2:])


def _items(t, node, shapes):
    return tuple(t.tracer.node("item", (node, i), s, "f", 15) for i, s in enumerate(shapes))


@export(np.linalg.eigh)
def eigh(a, UPLO="L"):
    """``(w, V)`` of the symmetric matrix in ``a``'s lower triangle (``UPLO='U'``: the upper)."""
    t = _traced(a)
    if t is None:
        return tuple(np.linalg.eigh(a, UPLO))
    _square("eigh", a)
    both = t.tracer.call("eigh", (a,), None, "tuple", **({} if UPLO == "L" else {"UPLO": UPLO}))
    return _items(t, both, (a.shape[:-1], a.shape))


@export(np.linalg.eigvalsh)
def eigvalsh(a, UPLO="L"):
    t = _traced(a)
    if t is None:
        return np.linalg.eigvalsh(a, UPLO)
    _square("eigvalsh", a)
    return t.tracer.call("eigvalsh", (a,), a.shape[:-1], **({} if UPLO == "L" else {"UPLO": UPLO}))


@export(np.linalg.svd)
def svd(a, full_matrices=True, compute_uv=True):
    """The thin SVD ``(U, s, Vt)`` (``full_matrices=True`` only for square matrices), or ``s``."""
    t = _traced(a)
    if t is None:
        out = np.linalg.svd(a, full_matrices=full_matrices, compute_uv=compute_uv)
        return tuple(out) if compute_uv else out
    m, n = a.shape[-2:]
    k, lead = builtins.min(m, n), a.shape[:-2]
    if not compute_uv:
        return t.tracer.call("svd", (a,), lead + (k,), compute_uv=False)
    if full_matrices and m != n:
        raise ValueError("svd() of a non-square matrix traces the thin factors only: pass full_matrices=False")
    both = t.tracer.call("svd", (a,), None, "tuple", full_matrices=False)
    return _items(t, both, (lead + (m, k), lead + (k,), lead + (k, n)))


@export(np.linalg.qr)
def qr(a, mode="reduced"):
    """numpy's reduced ``(Q, R)`` (``mode='r'``: R)."""
    t = _traced(a)
    if t is None:
        out = np.linalg.qr(a, mode=mode)
        return out if mode == "r" else tuple(out)
    m, n = a.shape[-2:]
    k, lead = builtins.min(m, n), a.shape[:-2]
    if mode == "r":
        return t.tracer.call("qr", (a,), lead + (k, n), mode="r")
    both = t.tracer.call("qr", (a,), None, "tuple")
    return _items(t, both, (lead + (m, k), lead + (k, n)))


@export(np.linalg.pinv)
def pinv(a):
    t = _traced(a)
    if t is None:
        return np.linalg.pinv(a)
    return t.tracer.call("pinv", (a,), a.shape[:-2] + (a.shape[-1], a.shape[-2]))


@export(np.linalg.matrix_power)
def matrix_power(a, n):
    t = _traced(a)
    if t is None:
        return np.linalg.matrix_power(a, n)
    _square("matrix_power", a)
    return t.tracer.call("matrix_power", (a, int(n)), a.shape)


@export(np.linalg.multi_dot)
def multi_dot(arrays):
    t = _traced(*arrays)
    if t is None:
        return np.linalg.multi_dot(arrays)
    out = arrays[0]
    for x in arrays[1:]:
        out = out @ x
    return out


@export()
def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False):
    """scipy.linalg.solve_triangular: ``a``'s other triangle is not read."""
    t = _traced(a, b)
    if t is None:
        import scipy.linalg

        return scipy.linalg.solve_triangular(a, b, trans=trans, lower=lower, unit_diagonal=unit_diagonal)
    a, b = t.tracer.lift(a), t.tracer.lift(b)
    _square("solve_triangular", a)
    kwargs = {k: v for k, v in (("trans", trans), ("lower", lower), ("unit_diagonal", unit_diagonal)) if v}
    return t.tracer.call("solve_triangular", (a, b), b.shape, **kwargs)


@export(np.linalg.lstsq)
def lstsq(a, b, rcond=None):
    """numpy's ``(x, residuals, rank, s)`` for a full-rank ``a``."""
    t = _traced(a, b)
    if t is None:
        return np.linalg.lstsq(a, b, rcond=rcond)
    a, b = t.tracer.lift(a), t.tracer.lift(b)
    m, n = a.shape
    x_shape = (n,) + b.shape[1:]
    res_shape = ((1,) if b.ndim == 1 else b.shape[1:]) if m > n else (0,)
    four = t.tracer.call("lstsq", (a, b), None, "tuple")
    return (t.tracer.node("item", (four, 0), x_shape, "f", 15), t.tracer.node("item", (four, 1), res_shape, "f", 15),
            builtins.min(m, n), t.tracer.node("item", (four, 3), (builtins.min(m, n),), "f", 15))


def _linalg_norm(x, ord=None, axis=None, keepdims=False):
    """numpy.linalg.norm on traced values: the language's ``norm`` with numpy's orders and axes."""
    x = _traced(x).tracer.lift(x)
    axes = _axes(x.shape, axis)
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keepdims or i not in axes)
    kwargs = {k: v for k, v in (("axis", axis), ("keepdims", keepdims)) if v not in (None, False)}
    return x.tracer.call("norm", (x,) if ord is None else (x, ord), shape, **kwargs)


FUNCTIONS[np.linalg.norm] = _linalg_norm
