"""Derivatives of loop nodes (ir/loop.py): loops over the derivative of the body.

Forward. With state s_{k+1} = f(k, s_k, p) and tangents ṡ_0, ṗ, the tangent
obeys ṡ_{k+1} = ∂f/∂s ṡ_k + ∂f/∂p ṗ: one loop carrying (s, ṡ) over a body that
is f followed by its jvp. A collected stack of states gets the stack of tangents.

Reverse. The cotangents run backwards: with s̄_N the final state's cotangent,
s̄_k = (∂f/∂s at s_k)ᵀ s̄_{k+1} (+ the cotangent of stack entry k, when the loop
collected its states) and p̄ = Σ_k (∂f/∂p at s_k)ᵀ s̄_{k+1}. The states s_k come
from the same loop run with ``collect`` (memory proportional to N); the reverse
loop carries (s̄, p̄), reads s_k from the stack at its counter k, and its body is
the vjp of f there. Each derivative is an ordinary loop node, so it can be
differentiated again (second order) by these same functions.

These are the ``loop`` primitive's registered rules (ops/control.py names them by
path: they build IR and call the transforms, which the ops layer cannot import),
with the interface of every rule; a loop's value is a tuple, so its tangents,
cotangents and series are dicts {loop_get index: node} (ops/registry.py, "Rule
interface"). The transforms call these rules and these rules call the transforms
on the body: a mutual recursion, at run time only, and the one in the package.
"""

from __future__ import annotations

from derivd.ir.graph import Graph
from derivd.ir.loop import Body, counter_node, inline, loop
from derivd.ops.registry import FLOAT, nullary
from derivd.transforms.jvp import jvp as jvp_transform
from derivd.transforms.taylor import taylor as taylor_transform
from derivd.transforms.vjp import vjp as vjp_transform


def _zeros(like, shape):
    return nullary(like, "zeros", shape=tuple(shape))


def _batch(primals, tangents) -> tuple:
    """The batch axes a tangent (or a series: its (K, *batch)) has in front of its primal's shape."""
    p, t = next((p, t) for p, t in zip(primals, tangents) if t is not None)
    return t.shape[: len(t.shape) - len(p.shape)]


def jvp(primals, tangents, out, **params) -> dict[int, object]:
    """Tangents of the loop's outputs (by loop_get index) given its inputs' tangents (None: zero)."""
    return _forward_loop(out, tangents, _batch(primals, tangents), jvp_transform)


def taylor(primals, series, out, jet, **params) -> dict[int, object]:
    """Taylor series of the loop's outputs given its inputs': the same construction as the jvp,
    with the body's Taylor transform (coefficient k of s_{k+1} depends on coefficients 0..k of
    s_k and p, which the carried series hold)."""
    return _forward_loop(out, series, jet.lead, taylor_transform)


def _forward_loop(node, tangents: list, batch: tuple, transform) -> dict[int, object]:
    """A loop carrying (state, its tangents) over the body followed by ``transform`` of it."""
    graph, p = node.graph, node.params
    body: Body = p["body"]
    m = len(body.carried)
    inits, captured = list(node.inputs[:m]), list(node.inputs[m:])
    t_inits, t_caps = tangents[:m], tangents[m:]
    moving = [j for j, c in enumerate(body.carried) if c.dtype == FLOAT]
    caps = [l for l, c in enumerate(body.captured) if c.dtype == FLOAT and t_caps[l] is not None]

    g = Graph()
    k = counter_node(g)
    carried = [g.input(f"__c{j}", c.shape, c.dtype, "loop") for j, c in enumerate(body.carried)]
    dcarried = [g.input(f"__dc{j}", batch + body.carried[j].shape, FLOAT, "loop") for j in moving]
    cap = [g.input(f"__p{l}", c.shape, c.dtype, "loop") for l, c in enumerate(body.captured)]
    dcap = [g.input(f"__dp{l}", batch + body.captured[l].shape, FLOAT, "loop") for l in caps]
    outs = inline(g, body, k, carried, cap)
    douts = transform(g, [carried[j] for j in moving] + [cap[l] for l in caps], dcarried + dcap,
                      [outs[j] for j in moving])
    douts = [d if d is not None else _zeros(k, batch + body.carried[j].shape) for d, j in zip(douts, moving)]
    body2 = Body(g, k, carried + dcarried, cap + dcap, outs + douts)

    t0 = [t_inits[j] if t_inits[j] is not None else _zeros(node, batch + inits[j].shape) for j in moving]
    results = loop(graph, body2, inits + t0, captured + [t_caps[l] for l in caps], p["count"], p["reverse"],
                   p["collect"])
    m2 = m + len(moving)
    out = {}
    for pos, j in enumerate(moving):
        out[j] = results[m + pos]
        if p["collect"] and batch:  # stacked as (N, *batch, *shape); a tangent's batch axes lead
            stack = results[m2 + m + pos]
            nb = len(batch)
            perm = tuple(range(1, nb + 1)) + (0,) + tuple(range(nb + 1, stack.ndim))
            out[m + j] = graph.apply("transpose", [stack], {"perm": perm})
        elif p["collect"]:
            out[m + j] = results[m2 + m + pos]
    return out


def vjp(primals, node, cts: dict[int, object], **params) -> list:
    """Cotangents of the loop's inputs given those of its outputs (by loop_get index); only the
    captured inputs that vary (``primals.varies``) get one: each is a sum the reverse loop carries."""
    graph, p, needed = node.graph, node.params, primals.varies
    body: Body = p["body"]
    count, m = p["count"], len(body.carried)
    index, c = next(iter(cts.items()))  # a final state's cotangent (index < m), or a stack's (one more axis)
    batch = c.shape[: len(c.shape) - len(body.carried[index % m].shape) - (index >= m)]
    inits, captured = list(node.inputs[:m]), list(node.inputs[m:])
    moving = [j for j, c in enumerate(body.carried) if c.dtype == FLOAT]
    caps = [l for l, c in enumerate(body.captured) if c.dtype == FLOAT and needed[m + l]]
    stacked = [j for j in moving if (m + j) in cts]
    masked = any(getattr(c, "masked", False) for c in cts.values())

    if p["collect"]:  # the loop keeps its states already
        states = [graph.apply("loop_get", [node], {"index": m + j, "aval": ((count,) + c.shape, c.dtype)})
                  for j, c in enumerate(body.carried)]
    else:
        states = loop(graph, body, inits, captured, count, p["reverse"], collect=True)[m:] if count else []

    g = Graph()
    k = counter_node(g)
    ct = [g.input(f"__g{j}", batch + body.carried[j].shape, FLOAT, "loop") for j in moving]
    acc = [g.input(f"__a{l}", batch + body.captured[l].shape, FLOAT, "loop") for l in caps]
    stack = [g.input(f"__s{j}", (count,) + c.shape, c.dtype, "loop") for j, c in enumerate(body.carried)]
    cap = [g.input(f"__p{l}", c.shape, c.dtype, "loop") for l, c in enumerate(body.captured)]
    cstack = [g.input(f"__cs{j}", batch + (count,) + body.carried[j].shape, FLOAT, "loop") for j in stacked]
    for c in ct:
        c.masked = masked
    s = [g.apply("gather", [stack[j], k], {"axis": -len(c.shape) - 1}) for j, c in enumerate(body.carried)]
    outs = inline(g, body, k, s, cap)
    bars = vjp_transform(g, [s[j] for j in moving] + [cap[l] for l in caps], [outs[j] for j in moving], ct)
    new_ct = []
    for pos, j in enumerate(moving):
        b = bars[pos] if bars[pos] is not None else _zeros(k, batch + body.carried[j].shape)
        if j in stacked:
            c = cstack[stacked.index(j)]
            b = b + g.apply("gather", [c, k], {"axis": -len(body.carried[j].shape) - 1})
        new_ct.append(b)
    new_acc = [a if bars[len(moving) + pos] is None else a + bars[len(moving) + pos] for pos, a in enumerate(acc)]
    reverse_body = Body(g, k, ct + acc, stack + cap + cstack, new_ct + new_acc)

    ct0 = [cts[j] if j in cts else _zeros(node, batch + inits[j].shape) for j in moving]
    acc0 = [_zeros(node, batch + captured[l].shape) for l in caps]
    if not count:
        results = ct0 + acc0
    else:
        results = loop(graph, reverse_body, ct0 + acc0, states + captured + [cts[m + j] for j in stacked],
                       count, not p["reverse"])
    out = [None] * len(node.inputs)
    for pos, j in enumerate(moving):
        out[j] = results[pos]
    for pos, l in enumerate(caps):
        out[m + l] = results[len(moving) + pos]
    for r in out:
        if r is not None and masked:
            r.masked = True
    return out
