"""Python -> DSL: run a function once on traced values and write down what it did.

``trace(f, x=3, A=(2, 3))`` calls ``f`` with a :class:`Traced` stand-in per
parameter, shaped as asked. Every operation on a stand-in (``+ - * / ** @``,
indexing (``None`` and ``...`` too), ``.T`` and numpy's array methods
(``x.sum()``, ``x.reshape(2, 3)``), comparisons, the SDK's ``dd.sin``, ``dd.sum``,
``dd.where``..., and numpy's own ufuncs and common functions) records a node
and returns a new stand-in; Python control flow runs normally, so a Python
``for`` loop is unrolled and ``len(x)``/``x.shape`` are plain ints. What comes
back is a :class:`Program`: DSL text, and the numpy arrays the function
closed over, bound as named ``constants``.

Readable text: a node becomes an assignment when it is used more than once,
when the function kept it in a local variable (its name is reused, read from
the frame as ``f`` returns), or when writing it inline would make a long
line; everything else is written inline with the fewest parentheses Python's
precedence allows. The text parses back to the same computation, which is
what the tests check: derivatives of the traced DSL on the server match a
numpy reference of the very same Python function (the ``dd`` operations run
on numpy when given arrays).

Shapes are tracked while tracing (numpy's rules), so mistakes surface in
Python at the line that made them, not as a server error later.

``cached_trace`` (what the clients call) remembers programs per function,
shapes and closed-over values, so a loop calling ``client.gradient(f, ...)``
traces ``f`` once.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import keyword
import math
import sys
import types
from dataclasses import dataclass, field

import numpy as np

# Python's binding strengths: higher binds tighter.
ATOM, POSTFIX, POWER, UNARY, MUL, ADD, AND, OR, CMP = 16, 15, 13, 12, 11, 10, 8, 6, 5
BINARY_PREC = {"+": ADD, "-": ADD, "*": MUL, "/": MUL, "//": MUL, "%": MUL, "@": MUL, "**": POWER,
               "&": AND, "|": OR}
LINE = 72  # an inline expression longer than this gets its own assignment

# Names the language gives meaning to: never used for inputs or temporaries.
BUILTINS = frozenset((
    "abs sign sqrt cbrt exp exp2 expm1 log log2 log10 log1p sin cos tan asin acos atan sinh cosh tanh "
    "asinh acosh atanh erf erfc sigmoid softplus relu square reciprocal floor ceil round atan2 hypot "
    "maximum minimum pow clip sum prod mean max min logsumexp norm softmax where dot matmul outer "
    "transpose trace diag reshape concat concatenate stack zeros ones eye arange len solve inv det slogdet "
    "cholesky range pi e True False np numpy jnp scipy special float"
).split())


def reserved() -> frozenset:
    """``BUILTINS`` and every function the SDK exports (each is a language name)."""
    from . import ops
    return BUILTINS | frozenset(ops.PUBLIC)

_active: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("derivd_tracer", default=None)


@dataclass(frozen=True)
class Program:
    """A traced function: ``dsl`` text, ``constants`` it closed over, and its ``inputs`` (parameters)."""

    dsl: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.dsl


class Tracer:
    """One tracing session: the nodes in creation (hence topological) order and the constants."""

    def __init__(self):
        self.nodes: list[Traced] = []
        self.constants: dict[str, np.ndarray] = {}
        self.const_nodes: dict[int, tuple] = {}  # id(array) -> (array, its node): a reused array is one constant
        self.local_names: dict[int, str] = {}  # id(object) -> the function's local variable holding it
        self.global_names: dict[int, str] = {}  # id(array) -> a module-level name of an array it reads

    def node(self, kind: str, args: tuple, shape, dtype: str = "f", prec: int = ATOM) -> Traced:
        t = Traced(self, kind, args, shape, dtype, prec)
        self.nodes.append(t)
        return t

    def lift(self, value) -> Traced:
        """A Python or numpy value inside a traced computation: a literal, or a named constant."""
        if isinstance(value, Traced):
            if value.tracer is not self:
                raise ValueError("values from two different traces cannot be combined")
            return value
        if isinstance(value, (list, tuple)) and any(isinstance(v, Traced) for v in _flatten(value)):
            from . import ops
            return ops.stack([self.lift(v) for v in value])
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot use a {type(value).__name__} in a traced function")
        if arr.ndim == 0 and (arr.dtype.kind != "f" or (math.isfinite(arr) and abs(arr) <= 1e300)):
            return self.literal(arr.item())
        return self.constant(value, arr)

    def literal(self, v) -> Traced:
        if isinstance(v, bool):
            return self.node("lit", (repr(v),), (), "b")
        text = repr(int(v)) if isinstance(v, int) else repr(float(v))
        return self.node("lit", (text,), (), "i" if isinstance(v, int) else "f", UNARY if text[0] == "-" else ATOM)

    def constant(self, value, arr: np.ndarray) -> Traced:
        known = self.const_nodes.get(id(value))
        if known is not None:
            return known[1]
        name = f"c{len(self.constants) + 1}"
        kind = "i" if arr.dtype.kind in "iu" else "b" if arr.dtype.kind == "b" else "f"
        self.constants[name] = arr.astype(np.int64) if kind == "i" else arr.astype(np.float64) if kind == "f" else arr
        node = self.node("const", (name,), arr.shape, kind)
        if isinstance(value, np.ndarray):  # kept alive with its node, so its id is never another array's
            self.const_nodes[id(value)] = (value, node)
        return node

    def call(self, fname: str, args: tuple, shape, dtype: str = "f", **kwargs) -> Traced:
        return self.node("call", (fname, args, kwargs), shape, dtype)


class Traced:
    """A stand-in for an array while tracing: a node with a shape, and numpy-like operators."""

    __array_priority__ = 1000

    def __init__(self, tracer: Tracer, kind: str, args: tuple, shape, dtype: str, prec: int):
        self.tracer, self.kind, self.args = tracer, kind, args
        self.shape = tuple(shape) if shape is not None else None
        self.dtype, self.prec = dtype, prec

    __hash__ = object.__hash__  # identity: == builds a mask, so equality cannot serve hashing

    # ------------------------------------------------------------ array facts (static ints)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a traced scalar")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def T(self) -> Traced:
        if self.ndim < 2:
            return self
        return self.tracer.node("attr", (self, "T"), self.shape[::-1], self.dtype, POSTFIX)

    def __bool__(self):
        raise TypeError("a traced value has no truth value while tracing: `if`/`and`/`or` on it cannot be "
                        "written down; use dd.where(cond, a, b), or `&`, `|`, `~` on masks")

    def __float__(self):
        raise TypeError("a traced value is not a Python number while tracing: float(x), and math functions the "
                        "language lacks (math.copysign), cannot be written down; use the np.* or dd.* function")

    __complex__ = __float__

    def __array__(self, *args, **kwargs):
        raise TypeError("a traced value cannot become a numpy array; use the dd.* operations on it")

    def __repr__(self) -> str:
        return f"Traced(shape={self.shape}, dtype={self.dtype!r})"

    # ------------------------------------------------------------ operators

    def _binary(self, sym: str, other, reflected: bool = False) -> Traced:
        a, b = self, self.tracer.lift(other)
        if reflected:
            a, b = b, a
        if sym == "@":
            from . import ops
            return ops.matmul(a, b)
        if sym in "&|":
            if a.dtype != "b" or b.dtype != "b":
                raise TypeError(f"{sym} combines masks (comparisons); got {a!r} and {b!r}")
            dtype = "b"
        elif sym in ("//", "%") and a.dtype == b.dtype == "i":
            dtype = "i"
        else:
            dtype = "f"
        return self.tracer.node("bin", (sym, a, b), broadcast(a, b), dtype, BINARY_PREC[sym])

    def _compare(self, sym: str, other) -> Traced:
        b = self.tracer.lift(other)
        return self.tracer.node("cmp", (sym, self, b), broadcast(self, b), "b", CMP)

    def __add__(self, o): return self._binary("+", o)
    def __radd__(self, o): return self._binary("+", o, True)
    def __sub__(self, o): return self._binary("-", o)
    def __rsub__(self, o): return self._binary("-", o, True)
    def __mul__(self, o): return self._binary("*", o)
    def __rmul__(self, o): return self._binary("*", o, True)
    def __truediv__(self, o): return self._binary("/", o)
    def __rtruediv__(self, o): return self._binary("/", o, True)
    def __floordiv__(self, o): return self._binary("//", o)
    def __rfloordiv__(self, o): return self._binary("//", o, True)
    def __mod__(self, o): return self._binary("%", o)
    def __rmod__(self, o): return self._binary("%", o, True)
    def __pow__(self, o): return self._binary("**", o)
    def __rpow__(self, o): return self._binary("**", o, True)
    def __matmul__(self, o): return self._binary("@", o)
    def __rmatmul__(self, o): return self._binary("@", o, True)
    def __and__(self, o): return self._binary("&", o)
    def __rand__(self, o): return self._binary("&", o, True)
    def __or__(self, o): return self._binary("|", o)
    def __ror__(self, o): return self._binary("|", o, True)
    def __lt__(self, o): return self._compare("<", o)
    def __le__(self, o): return self._compare("<=", o)
    def __gt__(self, o): return self._compare(">", o)
    def __ge__(self, o): return self._compare(">=", o)
    def __eq__(self, o): return self._compare("==", o)  # type: ignore[override]
    def __ne__(self, o): return self._compare("!=", o)  # type: ignore[override]

    def __neg__(self):
        return self.tracer.node("unary", ("-", self), self.shape, "f" if self.dtype == "b" else self.dtype, UNARY)

    def __pos__(self):
        return self

    def __invert__(self):
        if self.dtype != "b":
            raise TypeError("~ applies to masks (comparisons)")
        return self.tracer.node("unary", ("~", self), self.shape, "b", UNARY)

    def __abs__(self):
        from . import ops
        return ops.abs(self)

    # ------------------------------------------------------------ indexing

    def __getitem__(self, index) -> Traced:
        items = list(index) if isinstance(index, tuple) else [index]
        clean, probe = [], []
        for it in items:
            if it is None or it is Ellipsis:
                clean.append(it)
                probe.append(it)
            elif isinstance(it, (list, np.ndarray)) and np.asarray(it).dtype == np.bool_:
                mask = np.asarray(it)  # a mask written in the function: its True positions
                clean.extend(self.tracer.lift(p.astype(np.int64)) for p in np.nonzero(mask))
                probe.append(mask)
            elif isinstance(it, slice):
                clean.append(slice(*(_static_int(p, "a slice bound") for p in (it.start, it.stop, it.step))))
                probe.append(clean[-1])
            elif isinstance(it, (Traced, np.ndarray, list)):
                idx = self.tracer.lift(np.asarray(it) if isinstance(it, list) else it)
                if idx.dtype != "i":
                    raise IndexError("an index array must hold integers (masks select a data-dependent "
                                     "number of elements: use dd.where instead)")
                clean.append(idx)
                probe.append(np.zeros(idx.shape, dtype=np.intp) if isinstance(it, Traced) else np.asarray(it))
            else:
                clean.append(_static_int(it, "an index"))
                probe.append(clean[-1])
        shape = _index_shape(self.shape, tuple(probe))
        if all(isinstance(c, slice) and c == slice(None) for c in clean):
            return self
        return self.tracer.node("index", (self, tuple(clean)), shape, self.dtype, POSTFIX)

    def __setitem__(self, index, value):
        raise TypeError("in-place assignment (y[i] = v) cannot be traced: the language's arrays are values. "
                        "Build the new array instead: dd.where(mask, v, y) to replace entries, or "
                        "dd.concat([y[:i], v[None], y[i + 1:]]) to replace row i")

    # ------------------------------------------------------------ numpy's methods

    def __getattr__(self, name):
        """``x.sum(axis=0)`` is ``dd.sum(x, axis=0)``: numpy's array methods that are SDK functions."""
        if name.startswith("_"):
            raise AttributeError(name)
        from . import ops
        fn = ops.method(name)
        if fn is None:
            raise AttributeError(f"a traced array has no method or attribute {name!r}"
                                 + ("" if name not in ops.PUBLIC else f"; call dd.{name}(x)"))
        return lambda *args, **kwargs: fn(self, *args, **kwargs)

    # ------------------------------------------------------------ numpy interop

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import ops
        fn = ops.UFUNCS.get(ufunc)
        if method != "__call__" or fn is None or kwargs:
            return NotImplemented
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        from . import ops
        fn = ops.FUNCTIONS.get(func)
        if fn is None:
            return NotImplemented
        return fn(*args, **kwargs)


def broadcast(*xs: Traced) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*(x.shape for x in xs)))
    except ValueError:
        raise ValueError("shapes " + " and ".join(str(list(x.shape)) for x in xs) + " do not broadcast") from None


def _index_shape(shape, probe) -> tuple[int, ...]:
    """The result shape of ``x[probe]``, by numpy on a zero-stride stand-in (no memory, numpy's errors)."""
    dummy = np.broadcast_to(np.zeros((), dtype=np.int8), shape)
    try:
        return dummy[probe].shape
    except IndexError as e:
        raise IndexError(f"{e} (array of shape {list(shape)})") from None


def _static_int(v, what: str):
    if v is None:
        return None
    if isinstance(v, Traced):
        raise IndexError(f"{what} must be a Python int while tracing, not a traced value")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise IndexError(f"{what} must be an int, got {v!r}")
    return int(v)


def _flatten(v):
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from _flatten(x)
    else:
        yield v


def active_tracer() -> Tracer | None:
    """The tracing session in progress on this thread/task, if any (``dd.zeros`` and kin need it)."""
    return _active.get()


# ---------------------------------------------------------------- the entry point

def trace(fn, **examples) -> Program:
    """Trace ``fn`` into DSL text. Each keyword gives a parameter's shape: an int ``n`` is a vector of n,
    a tuple is a shape, and an array (or number) stands for itself (an integer array makes an index input).
    Every parameter of ``fn`` needs one; they are the program's inputs."""
    params = list(inspect.signature(fn).parameters)
    missing = [p for p in params if p not in examples]
    extra = [k for k in examples if k not in params]
    if missing or extra:
        raise TypeError(f"trace: give an example shape for every parameter of {getattr(fn, '__name__', fn)!r}; "
                        + (f"missing {missing}" if missing else f"unknown {extra}"))
    for p in params:
        if not p.isidentifier() or keyword.iskeyword(p) or p in reserved():
            raise ValueError(f"parameter {p!r} is a name the language reserves; rename it")
    tracer = Tracer()
    args = {}
    for name in params:
        shape, dtype = _example(examples[name])
        args[name] = tracer.node("input", (name,), shape, dtype)
    token = _active.set(tracer)
    try:
        out = _call_reading_locals(_with_traced_math(fn), args, tracer)
    finally:
        _active.reset(token)
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    if not outputs:
        raise ValueError("the traced function returned an empty list")
    outputs = [tracer.lift(o) for o in outputs]
    text = Writer(tracer, set(params)).write(outputs, as_list=isinstance(out, (list, tuple)))
    used = set(_const_names_in(tracer, outputs))
    return Program(text, {k: v for k, v in tracer.constants.items() if k in used}, tuple(params))


def _example(v) -> tuple[tuple[int, ...], str]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),), "f"
    if isinstance(v, tuple) and all(isinstance(s, (int, np.integer)) for s in v):
        return tuple(int(s) for s in v), "f"
    arr = np.asarray(v)
    return arr.shape, "i" if arr.dtype.kind in "iu" else "f"


MATH_NAMES = {"fabs": "abs", "lgamma": "gammaln"}  # math's names for the SDK's functions of other names


def _traced_math() -> types.ModuleType:
    """A ``math`` whose functions the language has write that function of a traced value and stay
    math's own on plain numbers (``math.log(x, base)`` too); its other names are math's."""
    from . import ops

    shim = types.ModuleType("math", "math, tracing (derivd_client.trace)")
    for name in dir(math):
        real = getattr(math, name)
        ours = ops.PUBLIC.get(MATH_NAMES.get(name, name))
        setattr(shim, name, _either(real, ours) if callable(real) and ours is not None else real)
    return shim


def _either(real, ours):
    def call(*args):
        if not any(isinstance(a, Traced) for a in args):
            return real(*args)
        if real is math.log and len(args) == 2:
            return ours(args[0]) / ours(args[1])
        return ours(*args)

    call.__name__ = call.__qualname__ = real.__name__
    return call


def _with_traced_math(fn):
    """``fn`` with ``math`` tracing where it reads it: the module and functions imported from it
    (``from math import sin``) among its globals and closed-over values are swapped for
    ``_traced_math``'s. Only ``fn``'s own: a helper of another module keeps the real ``math``."""
    if not isinstance(fn, types.FunctionType):
        return fn
    shim = _traced_math()

    def swapped(value):
        if value is math:
            return shim
        if getattr(value, "__module__", None) == "math" and getattr(math, getattr(value, "__name__", ""), None) is value:
            return getattr(shim, value.__name__)
        return value

    def cell(c):
        try:
            return types.CellType(swapped(c.cell_contents))
        except ValueError:  # a cell not filled yet (a name the enclosing function binds later)
            return c

    globals_ = {k: swapped(v) for k, v in fn.__globals__.items()}
    closure = None if fn.__closure__ is None else tuple(cell(c) for c in fn.__closure__)
    copy = types.FunctionType(fn.__code__, globals_, fn.__name__, fn.__defaults__, closure)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def _call_reading_locals(fn, args: dict, tracer: Tracer):
    """Call ``fn`` and note, as its frame returns, which local variable holds which traced value."""
    code = getattr(fn, "__code__", None)
    previous = sys.getprofile()

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code is code:
            for name, value in frame.f_locals.items():
                if isinstance(value, (Traced, np.ndarray)) and name not in args:
                    tracer.local_names.setdefault(id(value), name)
        if previous is not None:
            previous(frame, event, arg)

    for name, value in getattr(fn, "__globals__", {}).items():
        if isinstance(value, np.ndarray):
            tracer.global_names.setdefault(id(value), name)
    if code is not None:
        sys.setprofile(profiler)
    try:
        return fn(**args)
    finally:
        if code is not None:
            sys.setprofile(previous)


def _const_names_in(tracer: Tracer, outputs):
    for n in Writer.live(outputs):
        if n.kind == "const":
            yield n.args[0]


# ---------------------------------------------------------------- writing DSL text

class Writer:
    """Nodes -> lines of DSL: shared, named or long subexpressions assigned, the rest inline."""

    def __init__(self, tracer: Tracer, reserved: set[str]):
        self.tracer = tracer
        self.taken = set(reserved) | globals()["reserved"]() | set(tracer.constants)
        self.text: dict[int, tuple[str, int]] = {}
        self.counter = 0

    @staticmethod
    def live(outputs) -> list[Traced]:
        seen: dict[int, Traced] = {}
        stack = list(outputs)
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen[id(n)] = n
            stack.extend(_children(n))
        return list(seen.values())

    def write(self, outputs: list[Traced], as_list: bool) -> str:
        live = {id(n) for n in self.live(outputs)}
        uses: dict[int, int] = {}
        for n in self.tracer.nodes:
            if id(n) in live:
                for c in _children(n):
                    uses[id(c)] = uses.get(id(c), 0) + 1
        for o in outputs:
            uses[id(o)] = uses.get(id(o), 0) + 1
        self._rename_constants(live)
        lines = []
        outs = {id(o) for o in outputs}
        for n in self.tracer.nodes:
            if id(n) not in live:
                continue
            text, prec = self.render(n)
            atom = n.kind in ("input", "const", "lit")
            only_output = id(n) in outs and uses.get(id(n), 0) == 1
            wanted = uses.get(id(n), 0) > 1 or id(n) in self.tracer.local_names or len(text) > LINE
            if not atom and not only_output and wanted:
                name = self.fresh(self.tracer.local_names.get(id(n)))
                lines.append(f"{name} = {text}")
                text, prec = name, ATOM
            self.text[id(n)] = (text, prec)
        parts = [self.text[id(o)][0] for o in outputs]
        lines.append(f"[{', '.join(parts)}]" if as_list else parts[0])
        return "\n".join(lines) + "\n"

    def _rename_constants(self, live: set[int]) -> None:
        """Constants the function held in a variable (its own, else its module's) keep that name."""
        for key, (_, node) in list(self.tracer.const_nodes.items()):
            wanted = self.tracer.local_names.get(key) or self.tracer.global_names.get(key)
            old = node.args[0]
            if id(node) in live and wanted and wanted not in self.taken:
                self.tracer.constants[wanted] = self.tracer.constants.pop(old)
                node.args = (wanted,)
                self.taken.discard(old)
                self.taken.add(wanted)

    def fresh(self, wanted: str | None) -> str:
        if wanted and wanted.isidentifier() and wanted not in self.taken and not keyword.iskeyword(wanted):
            self.taken.add(wanted)
            return wanted
        while True:
            self.counter += 1
            name = f"t{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def sub(self, n: Traced, need: int) -> str:
        """A child's text, parenthesised when it binds more loosely than ``need``."""
        text, prec = self.text[id(n)]
        return f"({text})" if prec < need else text

    def value(self, v) -> str:
        if isinstance(v, Traced):
            return self.text[id(v)][0]
        if isinstance(v, (list, tuple)) and any(isinstance(x, Traced) for x in v):
            return "[" + ", ".join(self.value(x) for x in v) + "]"
        return repr(tuple(v)) if isinstance(v, tuple) else repr(v)

    def render(self, n: Traced) -> tuple[str, int]:
        k, a = n.kind, n.args
        if k in ("input", "const"):
            return a[0], ATOM
        if k == "lit":
            return a[0], n.prec
        if k == "call":
            fname, args, kwargs = a
            parts = [self.value(x) for x in args] + [f"{key}={self.value(v)}" for key, v in kwargs.items()]
            return f"{fname}({', '.join(parts)})", POSTFIX
        if k == "bin":
            sym, x, y = a
            p = BINARY_PREC[sym]
            if sym == "**":  # right-associative; a unary minus may stand on its right
                return f"{self.sub(x, p + 1)} ** {self.sub(y, UNARY)}", p
            return f"{self.sub(x, p)} {sym} {self.sub(y, p + 1)}", p
        if k == "cmp":
            sym, x, y = a  # comparisons chain in Python: never leave one bare inside another
            return f"{self.sub(x, CMP + 1)} {sym} {self.sub(y, CMP + 1)}", CMP
        if k == "unary":
            sym, x = a
            return f"{sym}{self.sub(x, UNARY + 1)}", UNARY
        if k == "attr":
            return f"{self.sub(a[0], POSTFIX)}.{a[1]}", POSTFIX
        if k == "item":
            return f"{self.sub(a[0], POSTFIX)}[{a[1]}]", POSTFIX
        if k == "index":
            x, items = a
            return f"{self.sub(x, POSTFIX)}[{', '.join(self.index_item(i) for i in items)}]", POSTFIX
        raise AssertionError(k)

    def index_item(self, it) -> str:
        if it is None:
            return "None"
        if it is Ellipsis:
            return "..."
        if isinstance(it, Traced):
            return self.text[id(it)][0]
        if isinstance(it, slice):
            start = "" if it.start is None else str(it.start)
            stop = "" if it.stop is None else str(it.stop)
            return f"{start}:{stop}" + ("" if it.step is None else f":{it.step}")
        return str(it)


def _children(n: Traced):
    for v in n.args:
        yield from _traced_in(v)


def _traced_in(v):
    if isinstance(v, Traced):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _traced_in(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _traced_in(x)


# ---------------------------------------------------------------- the trace cache

TRACE_CACHE_SIZE = 256
_traces: dict[tuple, Program] = {}


class _Unknown(Exception):
    """A value whose content cannot be fingerprinted: the trace is not cached."""


def cached_trace(fn, **examples) -> Program:
    """``trace(fn, **examples)``, remembered per (function, input shapes and dtypes, closed-over values).

    The key fingerprints what the function can read besides its inputs: its closure cells, defaults
    and the globals its code names (arrays by content, numbers and strings by value, containers by
    their items, functions recursively, modules and classes by identity). A function that reads
    anything else (an object's attributes, say) is traced every time, as is one whose values changed
    since: a cached program never carries stale constants."""
    try:
        key = (fn, tuple((k, _example(v)) for k, v in sorted(examples.items())), _fingerprint(fn, 0))
        hash(key)
    except (_Unknown, TypeError):
        return trace(fn, **examples)
    program = _traces.get(key)
    if program is None:
        program = trace(fn, **examples)
        if len(_traces) >= TRACE_CACHE_SIZE:
            _traces.clear()
        _traces[key] = program
    return program


def _fingerprint(v, depth: int):
    if depth > 4:
        raise _Unknown
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes, np.number, np.bool_)):
        return (type(v).__name__, v)
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            raise _Unknown
        return ("array", v.dtype.str, v.shape, hashlib.blake2b(np.ascontiguousarray(v).tobytes()).digest())
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_fingerprint(x, depth + 1) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple((repr(k), _fingerprint(x, depth + 1)) for k, x in v.items()))
    if inspect.ismodule(v) or inspect.isclass(v) or inspect.isbuiltin(v) or isinstance(v, np.ufunc):
        return ("id", id(v))
    if inspect.isfunction(v):
        code = v.__code__
        cells = tuple(_fingerprint(c.cell_contents, depth + 1) for c in v.__closure__ or ())
        defaults = _fingerprint(v.__defaults__, depth + 1) if v.__defaults__ else ()
        names = sorted(n for n in _names(code) if n in v.__globals__)
        # functions and modules a function names are compared by what they are; values by content
        named = tuple((n, _fingerprint(v.__globals__[n], depth + 1)) for n in names)
        return ("function", id(code), cells, defaults, named)
    raise _Unknown


def _names(code) -> set[str]:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions) may read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names
