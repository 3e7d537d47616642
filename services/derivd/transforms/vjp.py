"""Reverse mode as a graph transform, with a batch of cotangents.

``vjp(graph, wrt, outputs, cotangents)`` appends the nodes computing
x̄_i = sum over outputs of (dy/dx_i)ᵀ ȳ, each cotangent of shape
``batch + shape(y)``. Only nodes that depend on ``wrt`` get cotangents, so a
rule is asked for exactly the primitives on a differentiable path; a missing
one raises, naming the primitive.

Cotangents that came through ``where`` are marked ``masked`` (zero on the
untaken side); marks flow upstream, and rules scale masked cotangents with
``mul0`` so that 0 times an infinite local derivative stays 0.
"""

from __future__ import annotations

from derivd import ops
from derivd.errors import NoDerivativeRule
from derivd.ops.registry import FLOAT
from derivd.transforms.fit import fit
from derivd.transforms.loops import vjp_loop


def vjp(graph, wrt: list, outputs: list, cotangents: list) -> list:
    nodes = graph.live_nodes(outputs)
    varies = {x.id for x in wrt}
    for n in nodes:
        if (n.dtype == FLOAT and n.prim not in ("input", "const") and ops.get(n.prim).differentiable
                and any(a.id in varies for a in n.inputs)):
            varies.add(n.id)
    ct: dict[int, object] = {}
    for o, c in zip(outputs, cotangents):
        if o.id in varies:
            ct[o.id] = c if o.id not in ct else ct[o.id] + c
    if not ct:
        return [None for _ in wrt]
    first = next(iter(zip(outputs, cotangents)))
    nbatch = len(first[1].shape) - len(first[0].shape)
    loop_cts: dict[int, dict] = {}  # loop node id -> {loop_get index: cotangent}
    for n in reversed(nodes):
        if n.prim == "loop" and n.id in loop_cts:  # a loop's derivative is a loop the other way
            cts = loop_cts.pop(n.id)
            c = next(iter(cts.values()))
            contributions = vjp_loop(graph, n, cts, c.shape[:nbatch], [a.id in varies for a in n.inputs])
        else:
            c = ct.get(n.id)
            if c is None or n.prim in ("input", "const"):
                continue
            if n.prim == "loop_get":
                loop_cts.setdefault(n.inputs[0].id, {})[n.params["index"]] = c
                continue
            prim = ops.get(n.prim)
            if prim.vjp is None:
                raise NoDerivativeRule(f"no vjp rule for primitive {n.prim!r}: cannot differentiate through it",
                                       primitive=n.prim, transform="vjp")
            contributions = prim.vjp(list(n.inputs), n, c, **n.params)
        for a, ca in zip(n.inputs, contributions):
            if ca is None or a.id not in varies:
                continue
            ca = fit(ca, c.shape[:nbatch] + a.shape, nbatch)
            masked = c.masked or ca.masked
            prev = ct.get(a.id)
            if prev is not None:
                masked = masked or prev.masked
                ca = prev + ca
            if masked:
                ca.masked = True
            ct[a.id] = ca
    return [ct.get(x.id) for x in wrt]
