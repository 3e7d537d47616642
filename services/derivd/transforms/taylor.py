"""Taylor mode as a graph transform: K Taylor coefficients of every node, for a batch
of directions at once.

Along a curve x(t) = x_0 + x_1 t + ... + x_K t^K of the inputs, every node y has
coefficients y_k = (1/k!) d^k/dt^k y(x(t)) at t = 0. Coefficient 0 is the node
itself. Coefficients 1..K are its *series*: one node of shape ``(K, *batch, *s)``
for a node of shape ``s``, axis 0 running over k = 1..K, then the batch of
directions (like the tangent batch of ``jvp``), then the node's own axes. Every
primitive acts on trailing axes, so the coefficient axis is one more leading axis
to it. With x(t) = x + t v, K = 1 is exactly ``jvp``.

Each primitive's ``taylor`` rule (ops/taylor_kernels.py, "rule shapes") maps the
input series to the output's: linear primitives coefficient by coefficient (their
jvp rule on the stacked series), products by Cauchy convolution, exp, log, sin,
tan, ... by their recurrences (Griewank & Walther, "Evaluating Derivatives",
2nd ed., ch. 13). A series that is structurally zero (constants, masks, integers,
piecewise-constant functions) is ``None`` and costs nothing; a primitive without
a rule raises ``NoDerivativeRule`` ("no Taylor rule for ..."), never a silent zero.
"""

from __future__ import annotations

from derivd import ops
from derivd.errors import NoDerivativeRule
from derivd.ops.registry import FLOAT, align
from derivd.transforms.conform import conform


def taylor(graph, wrt: list, series: list, outputs: list) -> list:
    """The series of ``outputs`` given the series of the inputs ``wrt``.

    ``series[i]`` has shape ``(K, *batch, *wrt[i].shape)``; the results have
    ``(K, *batch, *output.shape)``, or are None where an output does not vary.
    """
    if not wrt:
        return [None for _ in outputs]
    lead = series[0].shape[: len(series[0].shape) - len(wrt[0].shape)]
    jet = Jet(lead, {x.id: s for x, s in zip(wrt, series)})
    return [jet.series(o) for o in outputs]


class Jet:
    """The series known so far, and the one way to ask for more.

    ``series(node)`` propagates the rules through whatever ``node`` depends on that
    has no series yet, in topological order (node ids), and memoises the results.
    Rules call it for nodes they build from their primals (a derivative, a
    composition), so a rule can be written in terms of other primitives.
    ``constants``: nodes held constant (coefficient 0 only) for this one question,
    answered in a child scope whose results are not shared.
    """

    def __init__(self, lead: tuple[int, ...], known: dict, parent: Jet | None = None):
        self.lead = lead  # (K, *batch)
        self.known = known
        self.parent = parent
        self.active: set[int] = set()

    def series(self, node, constants=()):
        if not hasattr(node, "graph"):  # a Python number from a rule: a constant
            return None
        if constants:
            return Jet(self.lead, {c.id: None for c in constants}, parent=self).series(node)
        found, value = self._lookup(node.id)
        if found:
            return value
        todo, stack, seen = [], [node], {node.id}
        while stack:
            n = stack.pop()
            todo.append(n)
            for a in n.inputs:
                if a.id not in seen and not self._lookup(a.id)[0]:
                    seen.add(a.id)
                    stack.append(a)
        for n in sorted(todo, key=lambda n: n.id):
            if n.id in self.known:  # computed meanwhile, by a rule that needed it
                continue
            if n.id in self.active:
                raise RuntimeError(f"the Taylor rule of {n.prim!r} needs its own series")
            self.active.add(n.id)
            self.known[n.id] = self._propagate(n)
            self.active.discard(n.id)
        return self.known[node.id]

    def _lookup(self, node_id: int):
        jet = self
        while jet is not None:
            if node_id in jet.known:
                return True, jet.known[node_id]
            jet = jet.parent
        return False, None

    def _propagate(self, n):
        if n.prim in ("input", "const") or n.dtype != FLOAT:
            return None
        prim = ops.get(n.prim)
        if not prim.differentiable:
            return None
        ss = [self._lookup(a.id)[1] for a in n.inputs]
        if all(s is None for s in ss):
            return None
        rule = prim.rule("taylor")
        if rule is None:
            raise NoDerivativeRule(f"no Taylor rule for {n.prim!r}: cannot expand it in a Taylor series",
                                   primitive=n.prim, transform="taylor")
        if prim.broadcasting:
            ss = [None if s is None else align(s, a.ndim, n.ndim) for s, a in zip(ss, n.inputs)]
        out = rule(list(n.inputs), ss, n, self, **n.params)
        if out is None or prim.tuple_valued:  # a tuple's series are a dict, one per element
            return out
        return conform(out, self.lead + n.shape, len(self.lead))
