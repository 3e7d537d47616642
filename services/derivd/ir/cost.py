"""What running a graph costs, in floating-point operations, known from its shapes alone.

A program's cost is fixed once it is lowered: a ``matmul`` of ``(m, k) @ (k, n)``
is ``2 m k n`` operations, a factorisation (``inv``, ``det``, ``solve``,
``cholesky`` and their Taylor kernels) about ``n^3`` per matrix, a loop its
count times its body, anything else about one operation per element read or
written. The estimate is a floor, not a prediction (numpy does at least this
much), so a program refused for it (``max_program_flops``, core/prepare.py)
could not have finished, and the compiled tape reads it to space its
deadline checks by work rather than by lines (compile/codegen.py).
"""

from __future__ import annotations

CUBIC = ("inv", "det", "logabsdet", "slogdet_sign", "solve", "cholesky",
         "taylor_inv", "taylor_solve", "taylor_cholesky")


def node_flops(n) -> int:
    """Operations node ``n`` costs each time it runs (a loop: all its iterations)."""
    if n.prim in ("input", "const"):
        return 0
    if n.prim == "loop":
        p = n.params
        body = p["body"]
        per_step = graph_flops(body.graph.live_nodes(body.outputs))
        stacked = sum(max(1, c.size) for c in body.carried) if p["collect"] else 0
        return p["count"] * (per_step + stacked + 1)
    read = sum(a.size for a in n.inputs)
    if n.prim == "matmul" or (n.prim == "taylor_prod" and n.params.get("prim") == "matmul"):
        a = n.inputs[0]
        inner = a.shape[-1] if a.ndim else 1
        return max(2 * n.size * inner, read)
    if n.prim in CUBIC and n.inputs:
        a = n.inputs[0]
        side = a.shape[-1] if a.ndim else 1
        return max(a.size * side, read)
    return max(n.size, read)


def graph_flops(nodes) -> int:
    """Operations of running ``nodes`` once (a tape's live nodes)."""
    return sum(node_flops(n) for n in nodes)


def describe(flops: int) -> str:
    """``3.2e+14`` style, for messages."""
    return f"{flops:.2g}" if flops >= 10**6 else str(flops)
