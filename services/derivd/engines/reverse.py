"""Reverse mode: gradients, VJPs, and Jacobians row-block by row-block.

The gradient uses an unbatched cotangent of ones, so a scalar program's
derivative tape stays on the rank-0 fast path. Jacobian rows come from a batch
of unit cotangents per pass, chunked like forward mode.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.engines.common import Wrt, check_deadline, chunk_size, or_zeros, require_scalar
from derivd.transforms import vjp as vjp_transform


def _vjp_tape(fn, wrt: Wrt, batch: tuple[int, ...] | None):
    """batch None: the cotangent is the constant 1 (gradient); else an input ``batch + out_shape``."""

    def build():
        if batch is None:
            return [], [fn.output] + gradient_nodes(fn, wrt)
        ct = fn.extra_input("__ct", batch + fn.out_shape)
        cts = vjp_transform(fn.graph, wrt.nodes, [fn.output], [ct])
        return [ct], [fn.output] + or_zeros(fn, cts, [batch + s for s in wrt.shapes])

    return fn.tape(("vjp", tuple(wrt.names), batch), build)


def gradient_nodes(fn, wrt: Wrt) -> list:
    """The gradient program: the vjp of the output with the constant cotangent 1, per wrt input."""
    shape = fn.out_shape
    ct = fn.graph.const(1.0) if shape == () else fn.graph.apply("ones", (), {"shape": shape})
    return or_zeros(fn, vjp_transform(fn.graph, wrt.nodes, [fn.output], [ct]), wrt.shapes)


def gradient_tape(fn, wrt_names):
    """The tape of the gradient (outputs: the value, then one gradient per wrt input) and the seconds
    compiling it took now (0 once built)."""
    require_scalar(fn.out_shape, "gradient")
    return _vjp_tape(fn, fn.wrt(wrt_names), None)


def gradient(fn, values, wrt_names):
    tape, seconds = gradient_tape(fn, wrt_names)
    y, *grads = fn.run(tape, values)
    return np.asarray(y), [np.asarray(g, dtype=np.float64) for g in grads], seconds


def vjp(fn, values, wrt_names, u: np.ndarray):
    """f(x) and u J for a flat cotangent ``u`` as long as the output (``core.prepare`` checked it)."""
    wrt = fn.wrt(wrt_names)
    tape, seconds = _vjp_tape(fn, wrt, (1,))
    y, *cts = fn.run(tape, values, u.reshape((1,) + fn.out_shape))
    return np.asarray(y), [np.asarray(c).reshape(s) for c, s in zip(cts, wrt.shapes)], seconds


def vjps(fn, values, wrt_names, cotangents: np.ndarray):
    """f(x) and U J for a ``(k, m)`` block of flat cotangents, in one pass."""
    wrt = fn.wrt(wrt_names)
    k = cotangents.shape[0]
    tape, seconds = _vjp_tape(fn, wrt, (k,))
    y, *cts = fn.run(tape, values, cotangents.reshape((k,) + fn.out_shape))
    return np.asarray(y), wrt.join(cts, (k,)), seconds


def jacobian(fn, values, wrt_names, settings):
    wrt = fn.wrt(wrt_names)
    m = math.prod(fn.out_shape)
    b = chunk_size(m, fn.widest_node_bytes * 3, settings.forward_chunk_bytes)
    tape, seconds = _vjp_tape(fn, wrt, (b,))
    rows = []
    y = None
    for start in range(0, max(m, 1), b):
        check_deadline()
        stop = min(start + b, m)
        seeds = np.zeros((b, m))
        seeds[np.arange(stop - start), np.arange(start, stop)] = 1.0
        y, *cts = fn.run(tape, values, seeds.reshape((b,) + fn.out_shape))
        rows.append(wrt.join(cts, (b,))[: stop - start])
    return np.asarray(y), np.concatenate(rows, axis=0), seconds
