"""The endpoints by automatic differentiation: one function per endpoint, on a prepared request.

Each takes a ``Prepared`` (``core.prepare``: checked, directions shaped) and
returns the response dict and the seconds spent compiling tapes. They choose
the engine: ``auto`` goes forward when the inputs are no more than the
outputs, else reverse; a sparse Jacobian or Hessian is found by colouring its
detected pattern when asked (``sparse``) or, in ``auto`` mode, when that takes
fewer passes. Mode ``taylor`` is answered by ``core.taylor_mode``.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.core import taylor_mode
from derivd.engines import forward, forward_over_reverse, reverse, sparse, taylor
from derivd.engines.common import require_dense

AD_SPARSE = "`sparse: true` answers with its nonzeros where the pattern allows"


def pick(mode: str, n: int, m: int) -> str:
    """The engine of an AD mode: ``auto`` by the Jacobian's shape (n inputs, m outputs)."""
    if mode == "auto":
        return "forward" if n <= m else "reverse"
    return mode


def evaluate(p):
    tape, seconds = p.fn.eval_tape()
    (y,) = p.fn.run(tape, p.values)
    return {"value": np.asarray(y, dtype=np.float64), "engine": "tape"}, seconds


def gradient(p):
    fn, values, wrt = p.fn, p.values, p.wrt
    engine = "taylor" if p.mode == "taylor" else pick(p.mode, 2, 1)  # auto: reverse (one output)
    if engine == "reverse":
        run, seconds = bound_gradient(fn, wrt)
        return run(fn, values), seconds
    if engine == "taylor":
        y, grads, seconds = taylor.gradient(fn, values, wrt, p.settings)
    else:
        y, jac, seconds = forward.jacobian(fn, values, wrt, p.settings)
        grads = [np.asarray(g).reshape(np.shape(values[w])) for g, w in zip(p.slots.split(jac[0]), wrt)]
    return _gradient(y, grads, wrt, engine), seconds


def bound_gradient(fn, wrt: list[str]):
    """The gradient in reverse mode (``auto``'s engine) bound to a compiled function and its checked
    ``wrt``: ``run(fn, values) -> response`` runs the tape found once and writes the answer, nothing
    else (kept by ``fn``: ``CompiledFunction.bound``); and the seconds binding took now (its tape compiled).
    What a warm request of its kind costs (``core.service.Plan``: ``Endpoint.bind``). ``fn`` is passed to
    ``run``, not captured: kept by ``fn``, a ``run`` holding it would be a cycle, which only a full
    collection frees, and functions evicted from the tape cache outlived its byte bound (300 new programs
    of 200 KB: RSS +62 MiB against +20 MiB, tests/chaos/test_memory.py)."""
    return fn.bound(("gradient", *wrt), _bind_gradient, fn, wrt)


def _bind_gradient(fn, wrt: list[str]):
    tape, _ = reverse.gradient_tape(fn, wrt)

    def run(fn, values: dict) -> dict:
        y, *grads = fn.run(tape, values)
        return _gradient(y, [np.asarray(g, dtype=np.float64) for g in grads], wrt, "reverse")

    return run


def _gradient(y, grads: list, wrt: list[str], engine: str) -> dict:
    return {"value": float(np.asarray(y).item()), "gradient": dict(zip(wrt, grads)), "engine": engine}


def jacobian(p):
    n, m = sum(math.prod(np.shape(p.values[w])) for w in p.wrt), p.m  # no slots unless a pattern is used
    if not p.sparse:  # a dense answer, whatever the pattern: refused before any pass or detection
        require_dense(m, n, "dense Jacobian", p.settings, AD_SPARSE)
    engine = "taylor" if p.mode == "taylor" else pick(p.mode, n, m)
    if engine != "taylor" and (p.sparse or (p.mode == "auto" and sparse.worth_trying(p.fn, n, m))):
        found = _sparse_jacobian(p, n, m)
        if found is not None:
            return found
    module = {"forward": forward, "reverse": reverse, "taylor": taylor}[engine]
    y, jac, seconds = module.jacobian(p.fn, p.values, p.wrt, p.settings)
    out = {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jacobian": jac, "shape": [m, n],
           "engine": engine}
    if p.sparse:  # taylor mode: no pattern, so the nonzeros of the dense answer
        rows, cols = np.nonzero(jac)
        out["jacobian"] = {"rows": rows, "cols": cols, "values": jac[rows, cols], "shape": list(jac.shape)}
    return out, seconds


def _sparse_jacobian(p, n, m):
    """By colouring the detected pattern: with ``sparse``, COO on the pattern; in auto mode only
    when it takes fewer passes than min(n, m) (else None: the dense engines answer)."""
    plan = sparse.jacobian_plan(p.fn, p.values, p.slots, p.mode, p.settings)
    if not p.sparse and plan.ncolors >= min(n, m):
        return None
    y, rows, cols, vals, seconds = sparse.jacobian(p.fn, p.values, p.wrt, plan, p.settings)
    if p.sparse:
        jac = {"rows": rows, "cols": cols, "values": vals, "shape": [m, n]}
    else:
        jac = np.zeros((m, n))
        jac[rows, cols] = vals
    return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jacobian": jac, "shape": [m, n],
            "engine": plan.direction, "sparsity": plan.info((m, n))}, seconds


def jvp(p):
    if p.mode == "taylor":
        engine, (y, dy, seconds) = "taylor", taylor.jvp(p.fn, p.values, p.wrt, p.v, p.settings)
    else:
        engine, (y, dy, seconds) = "forward", forward.jvp(p.fn, p.values, p.wrt, p.v)
    return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jvp": np.asarray(dy).reshape(-1),
            "engine": engine}, seconds


def vjp(p):
    y, cts, seconds = reverse.vjp(p.fn, p.values, p.wrt, p.u)
    return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "vjp": dict(zip(p.wrt, cts)),
            "engine": "reverse"}, seconds


def hvp(p):
    """Forward over reverse: the jvp of the gradient graph; ``vs`` (an extension) is one pass with a
    batch of directions."""
    if p.mode == "taylor":
        return taylor_mode.hvp(p)
    out = {"engine": "forward-over-reverse"}
    if not p.many:
        y, hv, seconds = forward_over_reverse.hvp(p.fn, p.values, p.wrt, p.v)
        out["hvp"] = dict(zip(p.wrt, hv))
    else:
        y, _, block, seconds = forward_over_reverse.hvp_blocks(p.fn, p.values, p.wrt, p.directions, p.settings)
        out["hvps"] = [dict(zip(p.wrt, p.slots.split(row))) for row in block]
    out["value"] = float(np.asarray(y).reshape(-1)[0])
    return out, seconds


def hessian(p):
    """Dense by batched HVPs of the identity; with ``sparse`` (and in auto mode when it saves passes)
    one HVP per colour of a star colouring of the detected pattern."""
    if p.mode == "taylor":
        return taylor_mode.hessian(p)
    n = p.slots.n
    out = {"engine": "forward-over-reverse"}
    plan = None
    if p.sparse or (p.mode == "auto" and sparse.worth_trying(p.fn, n, n)):
        plan = sparse.hessian_plan(p.fn, p.values, p.slots, p.settings)
        if not p.sparse and plan.ncolors >= n:
            plan = None
    if plan is None:
        y, grads, hess, seconds = forward_over_reverse.hessian(p.fn, p.values, p.wrt, p.settings)
    else:
        y, grads, rows, cols, vals, seconds = sparse.hessian(p.fn, p.values, p.wrt, plan, p.settings)
        if p.sparse:
            hess = {"rows": rows, "cols": cols, "values": vals, "shape": [n, n]}
        else:
            hess = np.zeros((n, n))
            hess[rows, cols] = vals
        out["sparsity"] = plan.info((n, n))
    out.update(value=float(np.asarray(y).reshape(-1)[0]), gradient=dict(zip(p.wrt, grads)), hessian=hess)
    return out, seconds
