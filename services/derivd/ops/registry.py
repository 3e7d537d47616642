"""The primitive registry: one record per primitive, holding all that it means.

A primitive is one ``register(Primitive(...))`` statement (or one line of a
helper such as ``unary``/``binary`` that makes one) in its family module, and
that statement says everything about it:

* ``shape_rule`` and its evaluation: a numpy code ``template`` for the
  compiler (with an optional ``scalar_template`` for rank-0 floats), or an
  ``impl`` called with the arguments and params;
* its derivative rules ``jvp``, ``vjp`` and ``taylor`` ("Rule interface"). A
  missing rule is ``None`` and the transform that needs it raises
  ``NoDerivativeRule`` naming the primitive: never a silent zero. A rule that
  needs layers above this one (a loop's rules are loops over the transforms of
  its body) is named by its ``"module:function"`` path and resolved on first use;
* ``sparsity``: its dependency shape (transforms/sparsity.py);
* ``sample``: where the registry sweeps (tests/ops, tests/transforms) draw its
  arguments ("Sweep cases" below), or ``tested_in``: the tests that cover a
  primitive the sweeps cannot draw; a tuple-valued one is swept through its
  ``view`` (one array built from its elements);
* ``dsl``: its names in the language, each with the function that lowers a
  call ("Language calls" below): dsl/library.py exposes every registered name,
  and nothing else lists them (a function composed of several primitives, such
  as ``var``, is registered by name with ``language``);
* ``xla``: its tier-2 lowering to jax (compile/xla.py), when its numpy
  ``template`` does not serve with jax.numpy in place of numpy;
* ``params``: the name and schema of each parameter its nodes carry ("Parameter
  schemas" below). A graph replayed from outside (ir/serialize.py) is checked
  against them, so a parameter is always the type and range its rules expect.

Rules build graph nodes; this layer does not import the IR. Nodes handed to a
rule support arithmetic operators, and ``apply(name, *args, **params)`` adds
any primitive to the graph the arguments live in.

Rule interface. ``jvp(primals, tangents, out, **params)`` returns the tangent of
``out`` (None: zero); ``vjp(primals, out, ct, **params)`` returns one cotangent
per primal (None: zero), and ``primals.varies[i]`` says whether primal i depends
on the differentiated inputs (a rule may skip the others; the transform drops
them anyway); ``taylor(primals, series, out, jet, **params)`` returns the
output's Taylor series (taylor_kernels.py has its shapes and recurrences). A
*tuple-valued* primitive (``loop``) has one tangent, cotangent or series per
element, passed and returned as a dict {element index: node}; the primitive
that reads an element (``loop_get``) picks its entry from that dict and, in
reverse, contributes ``{index: ct}``. The transforms treat every primitive alike.

Batch axes. Transforms carry a *batch* of tangents or cotangents as extra
leading axes: the tangent of a node of shape ``s`` has shape ``(B, *s)``
(or ``s`` unbatched). Every primitive is defined on its *core* (trailing) axes
and accepts any number of leading axes, so one rule serves both. Axes in
params are negative (counted from the end) for the same reason. For
primitives marked ``broadcasting`` the jvp transform aligns tangents to the
output's rank and the vjp transform sums cotangents back to each input's shape,
so their rules can be written as if no broadcasting happened.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from derivd.errors import ShapeError

Aval = tuple[tuple[int, ...], str]  # (shape, dtype) with dtype one of "f8", "i8", "b1"

FLOAT, INT, BOOL = "f8", "i8", "b1"


Rule = Callable | str | None  # a function, its "module:function" path, or None (no rule)


# ---------------------------------------------------------------- parameter schemas


@dataclass(frozen=True)
class Param:
    """The schema of one parameter: ``what`` it must be (for messages), and the test."""

    what: str
    ok: Callable[[Any], bool]


INT64 = 2**62  # bound of every integer parameter: sizes and counts far past any limit, no Python bignums


def _int(v) -> bool:
    return type(v) is int and -INT64 <= v <= INT64


def _size(v) -> bool:
    return _int(v) and v >= 0


def _shape(v) -> bool:
    return type(v) is tuple and all(_size(d) for d in v)


def _item(v) -> bool:
    return _int(v) or (type(v) is tuple and len(v) == 3 and all(_int(x) for x in v) and v[2] != 0)


SIZE = Param("a size (an int >= 0)", _size)
AXIS = Param("a negative axis (an int < 0)", lambda v: _int(v) and v < 0)
AXES = Param("distinct negative axes (a tuple of ints < 0)",
             lambda v: type(v) is tuple and all(AXIS.ok(a) for a in v) and len(set(v)) == len(v))
SHAPE = Param("a shape (a tuple of sizes)", _shape)
PERM = Param("a permutation (a tuple of sizes)", lambda v: _shape(v) and sorted(v) == list(range(len(v))))
ITEMS = Param("index items (a tuple of ints and (start, stop, step) triples of ints)",
              lambda v: type(v) is tuple and all(_item(i) for i in v))
FLAG = Param("a bool", lambda v: type(v) is bool)
NUMBER = Param("a number", lambda v: type(v) is float or _int(v))


@dataclass
class Primitive:
    name: str
    shape_rule: Callable[..., Aval]
    template: str | Callable | None = None  # e.g. "np.sin({0})"; params by name: "{axis}"
    impl: Callable | None = None  # called as impl(*args, **params) when no template
    scalar_template: str | None = None  # rank-0 float fast path on Python floats
    jvp: Rule = None
    vjp: Rule = None
    taylor: Rule = None
    broadcasting: bool = False
    differentiable: bool = True  # False: output is not float (masks, int ops): no tangent flows
    # (structure, curvature), transforms/sparsity.py: which input entries each output entry reads,
    # and the input pairs whose mixed second derivative may be nonzero ("all", ((i, j), ...), or ()
    # for linear maps). None: dense, never wrong.
    sparsity: tuple | None = None
    sample: list[dict] = field(default_factory=list)  # sweep cases (below)
    tested_in: str = ""  # the tests of a primitive the sweeps cannot draw (a loop needs a body)
    dsl: dict[str, Callable] = field(default_factory=dict)  # language name -> call(lib, *args, **kwargs)
    tuple_valued: bool = False  # its value is a tuple of arrays, read by another primitive
    # A tuple-valued primitive's node -> one array of all its elements that the sweeps check, smooth
    # where the primitive is (a vector's arbitrary sign removed, say).
    view: Callable | None = None
    params: dict[str, Param] = field(default_factory=dict)  # each parameter's name and schema
    inplace_impl: Callable | None = None  # impl that may overwrite its first argument (a fresh array that dies here)
    # Tier 2 (compile/xla.py): ``xla(jx, *args, **params)`` on jax arrays, ``jx`` holding ``jx.np``
    # (jax.numpy), ``jx.lax`` and ``jx.sp`` (jax.scipy.special). None: the numpy ``template`` evaluated
    # with jax.numpy in place of numpy; a primitive with neither (an ``impl`` alone) keeps its tapes on tier 1.
    xla: Callable | None = None
    doc: str = ""

    def check_params(self, params: dict) -> None:
        """Raise ``ValueError`` unless ``params`` has exactly the declared names, each value in its schema."""
        if set(params) != set(self.params):
            raise ValueError(f"{self.name} takes params {sorted(self.params)}, not {sorted(params)}")
        for name, schema in self.params.items():
            if not schema.ok(params[name]):
                raise ValueError(f"{self.name}'s param {name} must be {schema.what}, not {params[name]!r:.80}")

    def rule(self, kind: str) -> Callable | None:
        """The ``kind`` ("jvp", "vjp", "taylor") rule, a ``"module:function"`` path imported once."""
        r = getattr(self, kind)
        if isinstance(r, str):
            module, function = r.split(":")
            r = getattr(importlib.import_module(module), function)
            setattr(self, kind, r)
        return r


REGISTRY: dict[str, Primitive] = {}


def register(prim: Primitive) -> Primitive:
    if prim.name in REGISTRY:
        raise ValueError(f"primitive {prim.name!r} registered twice")
    REGISTRY[prim.name] = prim
    return prim


def get(name: str) -> Primitive:
    return REGISTRY[name]


# ---------------------------------------------------------------- graph access


def graph_of(args) -> Any:
    for a in args:
        g = getattr(a, "graph", None)
        if g is not None:
            return g
    raise TypeError("apply() needs at least one graph node among its arguments")


def apply(name: str, *args, **params):
    """Add primitive ``name`` to the graph its node arguments belong to."""
    return graph_of(args).apply(name, args, params)


def nullary(like, name: str, **params):
    """A primitive with no node arguments (``zeros``, ``eye``...) in ``like``'s graph.

    ``apply`` finds the graph through its node arguments; these have none.
    """
    return like.graph.apply(name, (), params)


# ---------------------------------------------------------------- shape helpers


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            "shapes " + " and ".join(str(list(s)) for s in shapes) + " do not broadcast",
            shapes=[list(s) for s in shapes],
        ) from None


def result_dtype(*dtypes: str) -> str:
    return FLOAT if FLOAT in dtypes else INT


def lead(node_shape: tuple[int, ...], core_ndim: int) -> tuple[int, ...]:
    """Leading (batch) axes of a shape whose last ``core_ndim`` axes are the core."""
    return node_shape[: len(node_shape) - core_ndim]


def unbroadcast(ct, nbatch: int, shape: tuple[int, ...]):
    """Sum a cotangent of a broadcast result back to an input's ``shape``.

    ``ct`` has shape ``batch + out`` (``nbatch`` batch axes) where ``shape``
    broadcasts to ``out``: sum the axes ``out`` has in front of ``shape`` and the
    axes where ``shape`` has size 1, keep the batch axes, then reshape.
    """
    target = ct.shape[:nbatch] + tuple(shape)
    if ct.shape == target:
        return ct
    extra = len(ct.shape) - nbatch - len(shape)
    axes = []
    for i in range(nbatch, len(ct.shape)):
        j = i - nbatch - extra
        if j < 0 or (shape[j] == 1 and ct.shape[i] != 1):
            axes.append(i - len(ct.shape))
    out = apply("sum", ct, axes=tuple(axes)) if axes else ct
    if out.shape != target:
        out = apply("reshape", out, shape=target, in_ndim=len(out.shape))
    return out


def align(t, primal_ndim: int, target_ndim: int):
    """Insert size-1 axes after a tangent's batch axes so its core has ``target_ndim`` axes."""
    if primal_ndim == target_ndim:
        return t
    b = len(t.shape) - primal_ndim
    new = t.shape[:b] + (1,) * (target_ndim - primal_ndim) + t.shape[b:]
    return apply("reshape", t, shape=new, in_ndim=len(t.shape))


def batch_of(t, primal) -> tuple[int, ...]:
    return t.shape[: len(t.shape) - len(primal.shape)]


# ---------------------------------------------------------------- sweep cases
#
# Every primitive with inputs carries ``sample``: cases the registry
# sweep (tests/ops) draws arguments from, away from kinks and domain edges by at
# least 0.1, so that high-order finite differences are exact there. A case is
# ``{"args": [spec, ...], "params": {...}}``; an argument spec is one of
#   ("real", shape, intervals)    float, differentiated; uniform on a union of (lo, hi)
#   ("fixed", shape, intervals)   float constant (an order, a shape parameter), drawn as "real"
#   ("distinct", shape, (lo, hi)) float, differentiated; elements at least (hi-lo)/(2n) apart (no ties)
#   ("invertible", shape)         float, differentiated; well-conditioned square matrices
#   ("spd", shape)                float, differentiated; symmetric positive definite matrices
#   ("symmetric", shape, (lo, hi)) float, differentiated; symmetric matrices whose eigenvalues are spread
#                                 over (lo, hi) as "distinct" spreads elements
#   ("spread", shape, (lo, hi))   float, differentiated; matrices whose singular values are spread over
#                                 (lo, hi) as "distinct" spreads elements (full rank, no repeats)
#   ("mask", shape)               boolean constant
#   ("index", shape, size)        int64 constant in [-size, size), repeats included

REAL = ((-2.0, 2.0),)
AWAY_FROM_0 = ((-2.0, -0.2), (0.2, 2.0))


def elementwise_cases(*domains) -> list[dict]:
    """Sweep cases for an elementwise primitive, one domain (intervals or "mask") per
    argument: scalars, vectors, matrices and every broadcasting pattern."""
    n = len(domains)
    shapes = ([[()], [(3,)], [(2, 3)]] if n == 1 else
              [[()] * n, [(3,)] * n, [(2, 3)] * n, [(2, 3), (3,)] + [()] * (n - 2),
               [(2, 1), (1, 3)] + [(3,)] * (n - 2), [()] + [(2, 3)] * (n - 1)])

    def spec(d, s):
        return ("mask", s) if d == "mask" else ("real", s, d)

    return [{"args": [spec(d, s) for d, s in zip(domains, combo)], "params": {}} for combo in shapes]


def case(*args, **params) -> dict:
    """One sweep case: arguments are shapes of real inputs (on REAL), or full specs such as
    ("index", shape, size); params are the primitive's."""
    return {"args": [a if a and isinstance(a[0], str) else ("real", a, REAL) for a in args], "params": params}


# ---------------------------------------------------------------- language calls
#
# ``Primitive.dsl`` maps a language name to ``call(lib, *args, **kwargs)``, which lowers a call
# of that name: ``lib`` is the language's Library (dsl/library.py: ``lib.as_float``, ``lib.axes``,
# ``lib.axis``, ``lib.arity``, ``lib.flat``...), the arguments are graph nodes or static values.
# A Python signature error in a call is the user's "bad arguments" (dsl/lower.py).


LANGUAGE: dict[str, Callable] = {}  # the language's composite functions: name -> call(lib, *args, **kwargs)


def language(*names: str) -> Callable:
    """Make ``call(lib, ...)`` the language's function(s) ``names``: a composition of primitives
    (``var``, ``einsum``...), which inherits their rules; its docstring is its documentation
    (arguments, conventions at non-smooth points)."""

    def register_call(call: Callable) -> Callable:
        for name in names:
            if name in LANGUAGE:
                raise ValueError(f"language function {name!r} registered twice")
            LANGUAGE[name] = call
        return call

    return register_call


def floats(prim: str, arity: int, name: str | None = None) -> Callable:
    """A call taking ``arity`` arrays, each as floats, and nothing else: ``prim(*args)``, called
    ``name`` (default: the primitive's) in messages."""

    def call(lib, *args, **kwargs):
        lib.arity(name or prim, args, kwargs, arity)
        return apply(prim, *[lib.as_float(a) for a in args])

    return call


# ---------------------------------------------------------------- cotangent scaling


def scale(ct, d):
    """``ct * d`` for a cotangent, safe where the cotangent is structurally zero.

    A cotangent that passed through ``where`` is zero on the untaken side; the
    local derivative there may be infinite (``sqrt`` at 0, ``1/x`` at 0), and
    ``0 * inf`` would leak a NaN into a gradient that is finite. Such cotangents
    carry ``masked``; for them we use ``mul0`` (0 times anything is 0).
    """
    if getattr(ct, "masked", False):
        return apply("mul0", ct, d)
    return ct * d
