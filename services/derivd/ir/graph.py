"""The IR: a graph of typed, shaped SSA nodes.

Nodes are appended in dependency order, so creation order is a topological
order. ``Graph.apply`` is the one way to add a node: it infers the shape and
dtype with the primitive's shape rule (errors name both shapes), folds rank-0
constants, simplifies multiplications by one and additions of zero, shares
identical nodes (hash-consing, i.e. common-subexpression elimination as the
graph is built) and enforces the node-count and intermediate-size limits
before anything runs.

Inputs are ``input`` nodes with a ``name`` and a ``role``: ``"at"`` for
differentiable inputs, ``"const"`` for inputs never differentiated (the
request's ``constants``; integer index arrays among them). Their values are
bound at run time, so one compiled tape serves every point of the same shapes.
"""

from __future__ import annotations

import hashlib
import math
from types import MappingProxyType
from typing import Any, Iterable

import numpy as np
import orjson

from derivd import ops
from derivd.errors import LimitExceeded, ShapeError
from derivd.ops.evaluate import eval_primitive
from derivd.ops.registry import BOOL, FLOAT, INT

DTYPE_BYTES = {FLOAT: 8, INT: 8, BOOL: 1}
NO_PARAMS = MappingProxyType({})  # the params of every node that has none: one shared, read-only mapping


def freeze(value: Any) -> Any:
    """A hashable, canonical form of a param value (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


class Node:
    """One SSA value. ``params`` maps each parameter's name to its (frozen, hashable) value, in
    name order; it is read-only by convention: ``Graph.apply`` keyed the node by it."""

    __slots__ = ("graph", "id", "prim", "inputs", "params", "shape", "dtype", "masked", "__weakref__")

    def __init__(self, graph, id, prim, inputs, params, shape, dtype):
        self.graph = graph
        self.id = id
        self.prim = prim
        self.inputs = inputs
        self.params = params
        self.shape = shape
        self.dtype = dtype
        self.masked = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"%{self.id}={self.prim}{list(self.shape)}"

    # Arithmetic builds nodes, so rules read like maths.
    def _ap(self, name, *args):
        return self.graph.apply(name, args, {})

    def __add__(self, o): return self._ap("add", self, o)
    def __radd__(self, o): return self._ap("add", o, self)
    def __sub__(self, o): return self._ap("sub", self, o)
    def __rsub__(self, o): return self._ap("sub", o, self)
    def __mul__(self, o): return self._ap("mul", self, o)
    def __rmul__(self, o): return self._ap("mul", o, self)
    def __truediv__(self, o): return self._ap("div", self, o)
    def __rtruediv__(self, o): return self._ap("div", o, self)
    def __neg__(self): return self._ap("neg", self)
    def __pow__(self, o): return self._ap("pow", self, o)
    def __matmul__(self, o): return self._ap("matmul", self, o)


class Graph:
    def __init__(self, limits=None):
        self.nodes: list[Node] = []
        self.inputs: dict[str, Node] = {}
        self.outputs: list[Node] = []
        self._memo: dict[tuple, Node] = {}
        self.max_nodes = getattr(limits, "max_graph_nodes", 10**7)
        self.max_bytes = getattr(limits, "max_intermediate_bytes", 10**12)

    # ------------------------------------------------------------ building

    def input(self, name: str, shape: tuple[int, ...], dtype: str = FLOAT, role: str = "at") -> Node:
        if name in self.inputs:
            return self.inputs[name]
        node = self._new("input", (), {"name": name, "role": role}, tuple(shape), dtype)
        self.inputs[name] = node
        return node

    def const(self, value) -> Node:
        """A rank-0 literal; arrays of constants are built from primitives (zeros, eye, ...)."""
        if isinstance(value, Node):
            return value
        if isinstance(value, (bool, np.bool_)):
            v, dtype = bool(value), BOOL
        elif isinstance(value, (int, np.integer)):
            v, dtype = int(value), INT
        else:
            v, dtype = float(value), FLOAT
        key = ("const", type(v), v if v == v else "nan")
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        node = self._new("const", (), {"value": v}, (), dtype)
        self._memo[key] = node
        return node

    def apply(self, name: str, args: Iterable, params: dict) -> Node:
        args = tuple(a if isinstance(a, Node) else self.const(a) for a in args)
        prim = ops.get(name)
        frozen = tuple(sorted((k, freeze(v)) for k, v in params.items()))
        key = (name, tuple(a.id for a in args), frozen)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        named = dict(frozen) if frozen else NO_PARAMS
        shape, dtype = prim.shape_rule(*[(a.shape, a.dtype) for a in args], **named)
        shape = tuple(int(n) for n in shape)
        simplified = self._simplify(name, args, shape, dtype)
        if simplified is not None:
            return simplified
        if shape == () and args and all(a.prim == "const" for a in args) and name != "zeros":
            node = self._fold(prim, args, named)
            if node is not None:
                self._memo[key] = node
                return node
        node = self._new(name, args, named, shape, dtype)
        self._memo[key] = node
        return node

    def _simplify(self, name, args, shape, dtype):
        """Peephole rewrites that derivative graphs need to stay lean.

        x*1, x+0, x-0, x/1 -> x; c*(array filled with v) -> a scalar multiply;
        -(c*x) -> (-c)*x; y + index_scatter(ct) -> index_add(y, ct) (no zero
        array per slice cotangent). Only where shape and dtype are unchanged.
        """
        if name == "neg" and args[0].prim == "mul":
            a, b = args[0].inputs
            if a.prim == "const" and a.dtype != BOOL and b.shape == shape:
                return self.apply("mul", (-a.params["value"], b), {})
        if name not in ("mul", "add", "sub", "div") or len(args) != 2:
            return None
        a, b = args
        va, vb = _filled(a), _filled(b)
        unit = 1 if name in ("mul", "div") else 0
        if vb == unit and a.shape == shape and a.dtype == dtype:
            return a
        if name in ("mul", "add") and va == unit and b.shape == shape and b.dtype == dtype:
            return b
        if name == "mul" and dtype == FLOAT:
            if va is not None and vb is not None and shape != ():
                return self.apply("broadcast_to", (float(va * vb),), {"shape": shape, "in_ndim": 0})
            for c, x in ((a, b), (b, a)):  # c * (d * x) -> (c*d) * x
                if c.prim == "const" and x.prim == "mul" and x.inputs[0].prim == "const" and x.shape == shape:
                    return self.apply("mul", (float(c.params["value"] * x.inputs[0].params["value"]), x.inputs[1]), {})
            if va is not None and a.prim != "const" and b.shape == shape:
                return self.apply("mul", (float(va), b), {})
            if vb is not None and b.prim != "const" and a.shape == shape:
                return self.apply("mul", (a, float(vb)), {})
        if name == "add" and dtype == FLOAT:
            for base, scat in ((a, b), (b, a)):
                if scat.prim == "index_scatter" and base.shape == shape and scat.shape == shape:
                    return self.apply("index_add", (base, scat.inputs[0]), {"items": scat.params["items"]})
        return None

    def _fold(self, prim, args, params):
        """Evaluate a rank-0 primitive of literals at build time (bounded by its inputs)."""
        try:
            with np.errstate(all="ignore"):
                # numpy scalars: numpy's semantics (0/0 is nan, not ZeroDivisionError), as the tapes have
                value = eval_primitive(prim, [np.float64(v) if type(v) is float else v
                                              for v in (a.params["value"] for a in args)], params)
        except (ArithmeticError, ValueError, TypeError):
            return None
        value = np.asarray(value)
        if value.shape != ():
            return None
        if value.dtype == np.bool_:
            return self.const(bool(value))
        if np.issubdtype(value.dtype, np.integer):
            return self.const(int(value))
        return self.const(float(value))

    def _new(self, prim, inputs, params, shape, dtype) -> Node:
        if len(self.nodes) >= self.max_nodes:
            raise LimitExceeded(
                f"the program expands to more than {self.max_nodes} graph nodes (limit max_graph_nodes)",
                limit="max_graph_nodes", value=len(self.nodes) + 1, max=self.max_nodes,
            )
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
        if nbytes > self.max_bytes:
            raise LimitExceeded(
                f"an intermediate of shape {list(shape)} needs {nbytes} bytes, over the limit "
                f"max_intermediate_bytes={self.max_bytes}",
                limit="max_intermediate_bytes", value=nbytes, max=self.max_bytes, shape=list(shape),
            )
        node = Node(self, len(self.nodes), prim, inputs, params, shape, dtype)
        self.nodes.append(node)
        return node

    # ------------------------------------------------------------ views

    def live_nodes(self, outputs: list[Node] | None = None) -> list[Node]:
        """Nodes the outputs depend on, in topological order (dead-code elimination)."""
        outputs = self.outputs if outputs is None else outputs
        live = set()
        stack = [n for n in outputs]
        while stack:
            n = stack.pop()
            if n.id in live:
                continue
            live.add(n.id)
            stack.extend(n.inputs)
        return [n for n in self.nodes if n.id in live]

    def to_json(self) -> dict:
        """Canonical JSON form: live nodes renumbered densely in topological order."""
        nodes = self.live_nodes()
        index = {n.id: i for i, n in enumerate(nodes)}
        return {
            "nodes": [
                [n.prim, [index[a.id] for a in n.inputs], [[k, _jsonable(v)] for k, v in n.params.items()],
                 list(n.shape), n.dtype]
                for n in nodes
            ],
            "outputs": [index[o.id] for o in self.outputs],
        }

    def content_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.to_json())).hexdigest()


def _filled(node: Node):
    """The value a literal, or an array filled with one value (ones/zeros, reshaped or broadcast), holds."""
    while node.prim in ("reshape", "broadcast_to"):
        node = node.inputs[0]
    if node.prim in ("ones", "zeros"):
        return 1 if node.prim == "ones" else 0
    if node.prim == "const" and node.dtype != BOOL:
        return node.params["value"]
    return None


def _jsonable(v):
    if hasattr(v, "to_json"):  # a loop body (ir/loop.py)
        return v.to_json()
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def check_same_shape(what: str, a: tuple, b: tuple) -> None:
    if tuple(a) != tuple(b):
        raise ShapeError(f"{what}: shapes {list(a)} and {list(b)} differ", shapes=[list(a), list(b)])
