"""A graph's canonical JSON form, and the graph rebuilt from it.

This is the form a compiled tape travels in between processes (the Redis tape
cache): the graph, never code. ``to_json`` writes the nodes the outputs depend
on, plus the tape's parameters (``inputs``, in call order, kept even when no
output reads them), renumbered densely in creation order, which is a
topological order::

    {"format": "derivd-graph/1",
     "nodes": [[prim, [argument indices], [[param, value], ...], shape, dtype], ...],
     "inputs": [node indices], "outputs": [node indices]}

Param values are JSON numbers, strings, booleans and lists (tuples); a
non-finite float is ``{"float": "inf" | "-inf" | "nan"}``, so every value comes
back with its Python type, which is what the compiler's templates print. A
loop body (``ir.loop.Body``, the ``body`` of a ``loop`` node) is
``{"body": <its own document>}``, rebuilt the same way; bodies with equal
documents come back as one object, as they were shared before.

``from_json`` trusts nothing in the text, signed or not: it replays every node
through ``Graph.apply`` (or ``Graph.input`` / ``Graph.const``), so each
primitive name must exist in the registry, its params must be exactly the ones
the primitive declares, each of the type and range of its schema
(``Primitive.params``: an index item is an int, a loop's ``reverse`` a bool),
each shape and dtype is re-inferred by the primitive's own shape rule and must
equal the recorded one, arguments must come before their use, and the graph
limits hold. Replaying a graph that
``Graph.apply`` built gives back the same graph, node for node: the
simplifications, folding and sharing ``apply`` performs depend only on the
arguments' structure, which the replay reproduces.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from derivd import ops
from derivd.errors import DerivdError
from derivd.ir.graph import Graph, Node
from derivd.ops.registry import BOOL, FLOAT, INT

FORMAT = "derivd-graph/1"
DTYPES = (FLOAT, INT, BOOL)
ROLES = ("at", "const", "extra", "loop")  # a program's inputs, its constants, seeds of a transform, a loop body's
NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class GraphFormatError(ValueError):
    """Text that is not a graph this build can rebuild exactly (corrupt, foreign or stale)."""


def to_json(graph: Graph, outputs: list[Node], inputs: list[Node] = ()) -> dict:
    """The canonical form of the nodes ``outputs`` need, with ``inputs`` as the tape's parameters."""
    keep = {n.id for n in graph.live_nodes(outputs)} | {n.id for n in inputs}
    nodes = [n for n in graph.nodes if n.id in keep]
    index = {n.id: i for i, n in enumerate(nodes)}
    return {
        "format": FORMAT,
        "nodes": [[n.prim, [index[a.id] for a in n.inputs], [[k, _encode(v)] for k, v in n.params.items()],
                   list(n.shape), n.dtype] for n in nodes],
        "inputs": [index[n.id] for n in inputs],
        "outputs": [index[n.id] for n in outputs],
    }


def dumps(graph: Graph, outputs: list[Node], inputs: list[Node] = ()) -> bytes:
    """``to_json`` as bytes: equal graphs give equal bytes (keys in one order, shortest floats)."""
    return orjson.dumps(to_json(graph, outputs, inputs), option=orjson.OPT_SORT_KEYS)


def from_json(data: dict | bytes | str, limits=None) -> tuple[Graph, list[Node], list[Node]]:
    """Rebuild ``(graph, inputs, outputs)`` by replaying every node; ``GraphFormatError`` if it can't."""
    try:
        doc = orjson.loads(data) if isinstance(data, (bytes, str)) else data
        return _replay(doc, limits)
    except GraphFormatError:
        raise
    except (DerivdError, KeyError, TypeError, ValueError, IndexError, orjson.JSONDecodeError) as e:
        raise GraphFormatError(f"not a rebuildable graph: {type(e).__name__}: {e}") from None


def _replay(doc: Any, limits) -> tuple[Graph, list[Node], list[Node]]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GraphFormatError(f"not a {FORMAT} document")
    graph = Graph(limits)
    built: list[Node] = []
    bodies: dict[bytes, Any] = {}

    def decode(v):
        if isinstance(v, list):
            return tuple(decode(x) for x in v)
        if not isinstance(v, dict):
            return v
        if set(v) == {"float"} and v["float"] in NONFINITE:
            return NONFINITE[v["float"]]
        if set(v) == {"body"}:
            from derivd.ir.loop import Body  # loop bodies are graphs serialised by this module

            text = orjson.dumps(v["body"], option=orjson.OPT_SORT_KEYS)
            if text not in bodies:
                bodies[text] = Body.from_json(v["body"], limits)
            return bodies[text]
        raise GraphFormatError(f"unknown param value {v!r}")

    for i, record in enumerate(doc["nodes"]):
        prim, args, params, shape, dtype = record
        if not all(isinstance(a, int) and 0 <= a < i for a in args):
            raise GraphFormatError(f"node {i} ({prim}) names an argument that is not an earlier node")
        params = {_key(k): decode(v) for k, v in params}
        shape = tuple(_dim(d) for d in shape)
        if dtype not in DTYPES:
            raise GraphFormatError(f"node {i} has unknown dtype {dtype!r}")
        if prim == "input":
            if (args or set(params) != {"name", "role"} or not isinstance(params["name"], str)
                    or params["role"] not in ROLES):
                raise GraphFormatError(f"input node {i} must have a name and a role (a string, and one of "
                                       f"{', '.join(ROLES)}) and no arguments")
            node = graph.input(params["name"], shape, dtype, params["role"])
        elif prim == "const":
            if args or set(params) != {"value"} or not isinstance(params["value"], (bool, int, float)):
                raise GraphFormatError(f"const node {i} must hold one number")
            node = graph.const(params["value"])
        else:
            if prim not in ops.REGISTRY:
                raise GraphFormatError(f"node {i} names unknown primitive {prim!r}")
            try:
                ops.get(prim).check_params(params)
            except ValueError as e:
                raise GraphFormatError(f"node {i}: {e}") from None
            node = graph.apply(prim, [built[a] for a in args], params)
        if node.shape != shape or node.dtype != dtype:
            raise GraphFormatError(f"node {i} ({prim}) rebuilds as {node.dtype}{list(node.shape)}, "
                                   f"recorded as {dtype}{list(shape)}")
        built.append(node)
    inputs = [built[_ref(i, built)] for i in doc["inputs"]]
    if any(n.prim != "input" for n in inputs):
        raise GraphFormatError("a tape parameter is not an input node")
    outputs = [built[_ref(i, built)] for i in doc["outputs"]]
    graph.outputs = outputs
    return graph, inputs, outputs


def _encode(v):
    if isinstance(v, tuple):
        return [_encode(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "to_json"):  # a loop body
        return {"body": v.to_json()}
    raise TypeError(f"param value {v!r} of type {type(v).__name__} has no JSON form")


def _key(k) -> str:
    if not isinstance(k, str):
        raise GraphFormatError(f"param name {k!r} is not a string")
    return k


def _dim(d) -> int:
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise GraphFormatError(f"dimension {d!r} is not a size")
    return d


def _ref(i, built) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(built):
        raise GraphFormatError(f"reference {i!r} names no node")
    return i
