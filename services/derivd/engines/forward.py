"""Forward mode: JVPs and Jacobians column-block by column-block.

A Jacobian is the JVP of a batch of unit seeds: one pass yields ``B`` columns,
with ``B`` chosen so that the pass's widest tangent (``B`` times the widest
intermediate) stays within ``forward_chunk_bytes``. The last chunk is padded
with zero seeds so one tape serves every chunk.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.engines.common import Wrt, check_deadline, chunk_size, or_zeros
from derivd.transforms import jvp as jvp_transform


def _jvp_tape(fn, wrt: Wrt, batch: tuple[int, ...]):
    def build():
        tangents = [fn.extra_input(f"__t_{name}", batch + shape) for name, shape in zip(wrt.names, wrt.shapes)]
        dy = or_zeros(fn, jvp_transform(fn.graph, wrt.nodes, tangents, [fn.output]), [batch + fn.out_shape])
        return tangents, [fn.output] + dy

    return fn.tape(("jvp", tuple(wrt.names), batch), build)


def jvp(fn, values, wrt_names, v: dict[str, np.ndarray]):
    """f(x) and J v for one direction ``v`` (per-input arrays)."""
    wrt = fn.wrt(wrt_names)
    tape, seconds = _jvp_tape(fn, wrt, ())
    y, dy = fn.run(tape, values, *[v[n] for n in wrt.names])
    return np.asarray(y), np.asarray(dy), seconds


def jvps(fn, values, wrt_names, directions: np.ndarray):
    """f(x) and J V for a ``(k, n)`` block of flat directions, in one pass."""
    wrt = fn.wrt(wrt_names)
    k = directions.shape[0]
    tape, seconds = _jvp_tape(fn, wrt, (k,))
    y, dy = fn.run(tape, values, *wrt.split(directions, (k,)))
    return np.asarray(y), np.asarray(dy).reshape(k, -1), seconds


def jacobian(fn, values, wrt_names, settings):
    """f(x) and the (m, n) Jacobian by batched unit seeds."""
    wrt = fn.wrt(wrt_names)
    m = math.prod(fn.out_shape)
    if wrt.n == 0:
        y = fn.run(fn.eval_tape()[0], values)[0]
        return np.asarray(y), np.zeros((m, 0)), 0.0
    b = chunk_size(wrt.n, fn.widest_node_bytes * 3, settings.forward_chunk_bytes)
    tape, seconds = _jvp_tape(fn, wrt, (b,))
    columns = []
    y = None
    for start in range(0, wrt.n, b):
        check_deadline()
        stop = min(start + b, wrt.n)
        seeds = np.zeros((b, wrt.n))
        seeds[np.arange(stop - start), np.arange(start, stop)] = 1.0
        y, dy = fn.run(tape, values, *wrt.split(seeds, (b,)))
        columns.append(np.asarray(dy).reshape(b, m)[: stop - start])
    return np.asarray(y), np.concatenate(columns, axis=0).T, seconds
