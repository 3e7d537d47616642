"""Forward mode as a graph transform, with a batch of tangents.

``jvp(graph, wrt, tangents, outputs)`` appends to ``graph`` the nodes that
compute, for each output y, dy = sum_i (dy/dx_i) t_i, where each tangent t_i
has shape ``batch + shape(x_i)``: a k-column block of a Jacobian is one pass
with batch (k,), not k passes. Tangents that are structurally zero are
``None`` and cost nothing.
"""

from __future__ import annotations

from derivd import ops
from derivd.errors import NoDerivativeRule
from derivd.ops.registry import FLOAT, align
from derivd.transforms.conform import conform


def jvp(graph, wrt: list, tangents: list, outputs: list) -> list:
    if not wrt:
        return [None for _ in outputs]
    batch = tangents[0].shape[: len(tangents[0].shape) - len(wrt[0].shape)]
    tan = {x.id: t for x, t in zip(wrt, tangents)}
    for n in graph.live_nodes(outputs):
        if n.prim in ("input", "const") or n.dtype != FLOAT:
            continue
        ts = [tan.get(a.id) for a in n.inputs]
        if all(t is None for t in ts):
            continue
        prim = ops.get(n.prim)
        if not prim.differentiable:
            continue
        rule = prim.rule("jvp")
        if rule is None:
            raise NoDerivativeRule(f"no jvp rule for primitive {n.prim!r}: cannot differentiate through it",
                                   primitive=n.prim, transform="jvp")
        if prim.broadcasting:
            ts = [None if t is None else align(t, a.ndim, n.ndim) for t, a in zip(ts, n.inputs)]
        out = rule(list(n.inputs), ts, n, **n.params)
        if out is not None:  # a tuple's tangents are a dict, one per element (ops/registry.py)
            tan[n.id] = out if prim.tuple_valued else conform(out, batch + n.shape, len(batch))
    return [tan.get(o.id) for o in outputs]
