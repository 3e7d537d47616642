"""How a ``for`` loop is lowered: as one ``loop`` node when its body is uniform, else unrolled.

The body is lowered once with the loop variable as a *value* (an int64 node,
start + step k at iteration k) instead of a static int. That works when the
body's structure does not depend on the number: ``x[i]``, ``x[i - 1]``,
``w[i % 3]`` become gathers by that value, ``a if i == 0 else b`` a where,
``h + i`` arithmetic. Whatever needs the number statically (``range(i)``,
``x[:i]``, a shape) fails that lowering, and the loop is unrolled instead, with
the same meaning. Small loops (iterations x body size at most
``loop_unroll_nodes``) are unrolled too: straight-line code is what every
transform knows best (sparsity patterns, Taylor rules).

A name the body assigns is *carried* from one iteration to the next when it is
bound before the loop or read after it (temporaries read only inside the body
are not); it must keep its shape across an iteration, and its dtype, except that
an integer start becomes a float (``total = 0`` then ``total = total + sum(v)``).
An integer the body updates as a number (``n = n + 1``) is index bookkeeping,
which unrolling keeps exact.
"""

from __future__ import annotations

import ast

from derivd.errors import DerivdError, LimitExceeded
from derivd.ir.graph import Node
from derivd.ir.loop import counter_node, loop, make_body
from derivd.ops.registry import FLOAT

STATIC = (bool, int, float)


class NotUniform(Exception):
    """The body's structure depends on the iteration: unroll it."""


def lower_loop(lo, s: ast.For, env: dict, steps: range) -> bool:
    """Lower ``s`` as a loop node into ``lo``'s graph and bind its results in ``env``; False: unroll."""
    if len(steps) < 2:
        return False
    try:
        trace = Trace(lo, s, env, steps, {})
        if trace.promotions():
            trace = Trace(lo, s, env, steps, trace.promotions())
            if trace.promotions():
                return False
        if len(steps) * trace.size <= lo.settings.loop_unroll_nodes:
            return False
        body, inits = trace.body, trace.inits()
    except (DerivdError, NotUniform, ValueError):  # ValueError: a state the body does not always set
        return False
    trace.check_limits()
    results = loop(lo.graph, body, inits, trace.captured_outer, len(steps))
    for name, value in zip(trace.carried, results):
        env[name] = value
    for name, out in trace.outputs.items():
        if name not in trace.carried and isinstance(out, STATIC):
            env[name] = out  # a number, the same after every iteration
    env[s.target.id] = steps[-1]
    return True


class Trace:
    """The body of ``s`` lowered once into a fresh graph, with ``carried`` names as its state.

    ``shapes``: names to carry as nodes shaped like these (a first trace's outputs).
    """

    def __init__(self, lo, s: ast.For, env: dict, steps: range, shapes: dict):
        from derivd.dsl.lower import Lowerer

        self.lo, self.s, self.env, self.steps = lo, s, env, steps
        sub = Lowerer.child(lo)
        g = sub.graph
        k = counter_node(g)
        i = k if (steps.start, steps.step) == (0, 1) else g.apply(
            "add", [g.apply("mul", [k, steps.step], {}), steps.start], {})
        self.assigned = {n.id for st in s.body for n in ast.walk(st)
                         if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - {s.target.id}
        self.outside = lo.loaded_outside(s)
        self.carried: dict[str, Node] = {}
        captures: list[tuple[Node, Node]] = []

        def capture(v):
            if isinstance(v, Node):
                p = g.input(f"__p{len(captures)}", v.shape, v.dtype, "loop")
                captures.append((p, v))
                return p
            if isinstance(v, (tuple, list)):
                return type(v)(capture(x) for x in v)
            return v

        inner = {}
        for name, v in env.items():
            if name in self.assigned and (isinstance(v, Node) or name in shapes):
                like = shapes.get(name, v)
                self.carried[name] = g.input(f"__c{len(self.carried)}", like.shape, like.dtype, "loop")
            else:
                inner[name] = capture(v)
        for name, like in shapes.items():
            if name not in self.carried:  # an input reassigned, or a temporary read after the loop
                self.carried[name] = g.input(f"__c{len(self.carried)}", like.shape, like.dtype, "loop")
        inner.update(self.carried)
        inner[s.target.id] = i
        for stmt in s.body:
            sub.statement(stmt, inner)
        self.outputs = {name: inner[name] for name in self.assigned if name in inner}
        for name, out in self.outputs.items():
            if not isinstance(out, (Node,) + STATIC):
                raise NotUniform  # tuples of arrays and the like
            if isinstance(out, STATIC) and name in env and isinstance(env[name], STATIC) and out != env[name]:
                raise NotUniform  # a number updated each iteration: index bookkeeping
        self.iterations = sub.iterations
        names = list(self.carried)
        outs = [self.outputs.get(n) for n in names]
        nodes = [o for o in outs if isinstance(o, Node)]
        live = {n.id for n in g.live_nodes(nodes)}
        self.size = len(live)
        used = [(p, v) for p, v in captures if p.id in live]
        by_name = [n for n in g.inputs.values() if n.id in live and n.params["role"] in ("at", "const")]
        self.captured_outer = [v for _, v in used] + [lo.lookup(n.params["name"], s, {}) for n in by_name]
        self._outs = outs
        self._build = (g, k, [self.carried[n] for n in names], [p for p, _ in used] + by_name)

    def promotions(self) -> dict:
        """Names whose value after the body is not the state they came in as: carry them as that.

        Only the dtype may change (an integer start of a float sum); a shape may not, since a
        number broadcast to the array a later iteration makes is not that number to a
        reduction or to len() in the first iteration."""
        out = {}
        for name, value in self.outputs.items():
            held = self.carried.get(name)
            if held is not None:
                if not isinstance(value, Node):
                    raise NotUniform
                if (value.shape, value.dtype) != (held.shape, held.dtype):
                    out[name] = value
            elif isinstance(value, Node) and (name in self.env or name in self.lo.specs or name in self.outside):
                out[name] = value
        for name, value in out.items():
            start = self.env.get(name, self.lo.specs.get(name))
            if start is not None and tuple(getattr(start, "shape", ())) != value.shape:
                raise NotUniform
        return out

    @property
    def body(self):
        g, k, carried, captured = self._build
        return make_body(g, k, carried, captured, self._outs)

    def inits(self) -> list[Node]:
        """The outer values the carried names start from, shaped and typed like their placeholders."""
        out = []
        for name, like in self.carried.items():
            if name in self.env:
                node = self.lo.node(self.env[name])
            elif name in self.lo.specs:
                node = self.lo.lookup(name, self.s, self.env)
            elif like.dtype == FLOAT:  # a temporary: written before it is read in every iteration
                node = self.lo.graph.apply("zeros", (), {"shape": like.shape})
            else:
                raise NotUniform
            if node.dtype != like.dtype:
                if like.dtype != FLOAT:
                    raise NotUniform
                node = self.lo.lib.as_float(node)
            out.append(node)
        return out

    def check_limits(self) -> None:
        """The loop counts as its expansion: N times its iterations, N times its nodes."""
        from derivd.dsl.parse import at

        lo, n = self.lo, len(self.steps)
        iterations = lo.iterations + n * (1 + self.iterations)
        limit = lo.settings.max_loop_iterations
        if iterations > limit:
            raise LimitExceeded(f"loops would run {iterations} iterations in total, over the limit "
                                f"max_loop_iterations={limit}", limit="max_loop_iterations", value=iterations,
                                max=limit, **at(self.s))
        lo.iterations = iterations
        expanded = len(lo.graph.nodes) + n * self.size
        if expanded > lo.graph.max_nodes:
            raise LimitExceeded(f"the program expands to more than {lo.graph.max_nodes} graph nodes (limit "
                                f"max_graph_nodes)", limit="max_graph_nodes", value=expanded,
                                max=lo.graph.max_nodes)
