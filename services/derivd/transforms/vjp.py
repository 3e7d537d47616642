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
from derivd.transforms.conform import conform


class Primals(list):
    """A node's inputs, as a vjp rule receives them, with ``varies[i]``: whether input i
    depends on the differentiated inputs (a rule may build cotangents for those only)."""

    __slots__ = ("_varying",)  # ids of the nodes that vary, shared by every node's Primals

    @property
    def varies(self) -> list[bool]:
        return [a.id in self._varying for a in self]


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
    batch = first[1].shape[:nbatch]
    for n in reversed(nodes):
        c = ct.get(n.id)
        if c is None or n.prim in ("input", "const"):
            continue
        rule = ops.get(n.prim).rule("vjp")
        if rule is None:
            raise NoDerivativeRule(f"no vjp rule for primitive {n.prim!r}: cannot differentiate through it",
                                   primitive=n.prim, transform="vjp")
        primals = Primals(n.inputs)
        primals._varying = varies
        contributions = rule(primals, n, c, **n.params)
        c_masked = getattr(c, "masked", False)  # a tuple's cotangents (a dict) carry their own marks
        for a, ca in zip(n.inputs, contributions):
            if ca is None or a.id not in varies:
                continue
            prev = ct.get(a.id)
            if isinstance(ca, dict):  # cotangents of elements of a tuple-valued input (ops/registry.py)
                merged = dict(prev or {})
                for index, e in ca.items():
                    merged[index] = e if index not in merged else _sum(merged[index], e)
                ct[a.id] = merged
                continue
            ca = conform(ca, batch + a.shape, nbatch)
            masked = c_masked or ca.masked
            if prev is not None:
                masked = masked or prev.masked
                ca = prev + ca
            if masked:
                ca.masked = True
            ct[a.id] = ca
    return [ct.get(x.id) for x in wrt]


def _sum(a, b):
    """a + b for two cotangents, masked if either is."""
    out = a + b
    if a.masked or b.masked:
        out.masked = True
    return out
