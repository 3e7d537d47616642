"""Loops as loops: a body graph run N times, instead of N copies of it.

A long ``for`` loop unrolled into straight-line nodes costs compile time and
memory per iteration in every layer (lowering, each transform, code generation).
When a loop body does not depend on the iteration's number in its *structure*
(its shapes and the nodes it makes; the number itself may be a value), the
lowering builds it once as a ``Body`` and the outer graph holds one ``loop`` node:

    loop(init_1..init_m, cap_1..cap_p; body, count, reverse, collect)

runs ``state = body(k, *state, *cap)`` for k = 0..count-1 (count-1..0 when
``reverse``) from ``state = init``. Its value is a tuple read by ``loop_get``
nodes: the final state (indices 0..m-1), then, with ``collect``, the state held
*before* each iteration stacked on a new leading axis indexed by k (indices
m..2m-1). ``k`` is the iteration counter (int64 rank 0); the body itself turns
it into the loop variable's value (start + step k).

Derivatives are loops too (transforms/loops.py): the jvp is one loop over the
body extended by its jvp; the vjp runs the forward loop with ``collect`` (the
states: memory proportional to N), then a loop the other way over the vjp of
the body, which reads the state of iteration k from the stack. Second order
composes: every derivative loop is an ordinary loop node.
"""

from __future__ import annotations

import numpy as np

from derivd import clock, deadlines
from derivd.ir.graph import Graph, Node
from derivd.ops.registry import INT


class Body:
    """A loop body: ``outputs = f(counter, *carried, *captured)`` with each output shaped like
    its carried input. Compared and hashed by identity; its JSON form is its graph's."""

    is_loop_body = True  # what the loop primitive's param schema asks of its body (ops/control.py)

    def __init__(self, graph: Graph, counter: Node, carried: list[Node], captured: list[Node],
                 outputs: list[Node]):
        self.graph = graph
        self.counter = counter
        self.carried = list(carried)
        self.captured = list(captured)
        self.outputs = list(outputs)
        self.tape = None  # compiled once, by the code generator

    @property
    def inputs(self) -> list[Node]:
        return [self.counter] + self.carried + self.captured

    def avals(self, nodes) -> tuple:
        return tuple((tuple(n.shape), n.dtype) for n in nodes)

    def live_size(self) -> int:
        return len(self.graph.live_nodes(self.outputs))

    def to_json(self) -> dict:
        from derivd.ir import serialize

        doc = serialize.to_json(self.graph, self.outputs, self.inputs)
        doc["carried"] = len(self.carried)
        return doc

    @classmethod
    def from_json(cls, doc: dict, limits=None) -> Body:
        from derivd.ir import serialize

        graph, inputs, outputs = serialize.from_json(doc, limits)
        m = int(doc["carried"])
        if not inputs or len(outputs) != m or len(inputs) < 1 + m:
            raise serialize.GraphFormatError("a loop body's inputs and outputs do not match")
        return cls(graph, inputs[0], inputs[1:1 + m], inputs[1 + m:], outputs)


def make_body(graph: Graph, counter: Node, carried: list[Node], captured: list[Node], outputs: list) -> Body:
    """A Body whose outputs are nodes (Python numbers become literals), checked against the carried."""
    outs = [o if isinstance(o, Node) else graph.const(o) for o in outputs]
    for c, o in zip(carried, outs):
        if (c.shape, c.dtype) != (o.shape, o.dtype):
            raise ValueError(f"loop body output {o.dtype}{list(o.shape)} does not match its carried "
                             f"{c.dtype}{list(c.shape)}")
    return Body(graph, counter, carried, captured, outs)


def inline(dst: Graph, body: Body, counter, carried: list, captured: list) -> list[Node]:
    """Replay ``body`` into ``dst`` on the given input nodes; returns its outputs there."""
    mapped = {body.counter.id: counter}
    mapped.update({c.id: v for c, v in zip(body.carried, carried)})
    mapped.update({c.id: v for c, v in zip(body.captured, captured)})
    for n in body.graph.live_nodes(body.outputs):
        if n.id in mapped:
            continue
        if n.prim == "input":
            raise ValueError(f"loop body input {n.params['name']!r} is not bound")
        if n.prim == "const":
            mapped[n.id] = dst.const(n.params["value"])
        else:
            mapped[n.id] = dst.apply(n.prim, [mapped[a.id] for a in n.inputs], n.params)
    return [mapped[o.id] for o in body.outputs]


def hoist(graph: Graph, body: Body, captured: list) -> tuple[Body, list]:
    """Move what the body computes from its captured values alone out of the loop.

    Such nodes (a slice of a weight matrix, its transpose, a constant's exp...) have the
    same value every iteration: computed once in ``graph``, they enter the body as
    captured values. Their derivatives benefit most: the reverse loop then accumulates
    the cotangent of the small hoisted value, and the one scatter into the whole
    captured array happens once, after the loop, instead of every iteration.
    """
    outer = {c.id: v for c, v in zip(body.captured, captured)}
    live = body.graph.live_nodes(body.outputs)
    if not any(n.prim not in ("input", "const") and all(a.id in outer or a.prim == "const" for a in n.inputs)
               for n in live):
        return body, list(captured)
    g = Graph()
    counter = g.input(body.counter.params["name"], (), INT, "loop")
    mapped = {body.counter.id: counter}
    carried = []
    for c in body.carried:
        mapped[c.id] = g.input(c.params["name"], c.shape, c.dtype, "loop")
        carried.append(mapped[c.id])
    new_captured, new_outer = [], []

    def inside(n):
        """The body-graph node standing for node ``n`` (hoisted ones become captured inputs)."""
        if n.id not in mapped:
            p = g.input(f"__h{len(new_captured)}", n.shape, n.dtype, "loop")
            new_captured.append(p)
            new_outer.append(outer[n.id])
            mapped[n.id] = p
        return mapped[n.id]

    for n in live:
        if n.id in mapped or n.id in outer:
            continue
        if n.prim == "const":
            mapped[n.id] = g.const(n.params["value"])
        elif n.prim == "input":
            raise ValueError(f"loop body input {n.params['name']!r} is not bound")
        elif all(a.id in outer or a.prim == "const" for a in n.inputs):
            args = [outer[a.id] if a.id in outer else graph.const(a.params["value"]) for a in n.inputs]
            outer[n.id] = graph.apply(n.prim, args, n.params)
        else:
            mapped[n.id] = g.apply(n.prim, [inside(a) if a.id in outer else mapped[a.id] for a in n.inputs],
                                   n.params)
    outputs = [inside(o) if o.id in outer else mapped[o.id] for o in body.outputs]
    return Body(g, counter, carried, new_captured, outputs), new_outer


def loop(graph: Graph, body: Body, inits: list, captured: list, count: int, reverse: bool = False,
         collect: bool = False) -> list[Node]:
    """Add a loop node and its ``loop_get`` outputs: the final states, then (``collect``) the stacks.
    Loop-invariant work is hoisted out of the body first (``hoist``)."""
    if count > 1:
        body, captured = hoist(graph, body, captured)
    node = graph.apply("loop", list(inits) + list(captured),
                       {"body": body, "count": count, "reverse": reverse, "collect": collect})
    avals = list(body.avals(body.carried))
    if collect:
        avals += [((count,) + shape, dtype) for shape, dtype in body.avals(body.carried)]
    return [graph.apply("loop_get", [node], {"index": k, "aval": aval}) for k, aval in enumerate(avals)]


def counter_node(graph: Graph) -> Node:
    return graph.input("__k", (), INT, "loop")


def run_loop(body_fn, carried: tuple, captured: tuple, count: int, reverse: bool, collect: bool) -> tuple:
    """What a compiled ``loop`` node runs; it stops between two iterations once the request being
    computed is past its deadline or the process is stopping (a clock read and a flag per
    iteration: far less than a body costs)."""
    states = []
    order = range(count - 1, -1, -1) if reverse else range(count)
    limit = deadlines.current()
    for k in order:
        if limit is not None and clock.now() > limit.at:
            raise deadlines.late(limit.budget_s)
        if deadlines.STOPPING.is_set():
            raise deadlines.stopping()
        if collect:
            states.append(carried)
        carried = body_fn(k, *carried, *captured)
    if not collect:
        return tuple(carried)
    if reverse:
        states.reverse()  # index k holds the state before iteration k, whichever way it ran
    stacks = tuple(np.stack([np.asarray(s[j]) for s in states]) if states
                   else np.empty((0,) + np.shape(c)) for j, c in enumerate(carried))
    return tuple(carried) + stacks
