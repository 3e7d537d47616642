"""Second order: Hessian-vector products as forward over reverse.

For a scalar f, the gradient program g(x) = vjp(f)(x, 1) is itself a graph,
and its JVP in a direction v is the Hessian-vector product

    H v = d/dt grad f(x + t v) |_{t=0} = jvp(vjp(f))(x; v),

one tape costing a small constant times f, never the n x n Hessian. A batch
of k directions (shape ``(k,) + shape(x)`` per input) is one pass, as in
forward mode, so H itself is the HVP of the identity's rows: ``hessian`` takes
them in chunks whose widest tangent stays within ``forward_chunk_bytes``, the
last chunk padded with zero rows so one tape serves all. Column j is H e_j, so
the result is symmetric to rounding, not bit for bit.

``HvpSession`` answers many directions at one point: the function, point and
tape are resolved once, the value and gradient are computed once (by the
reverse tape), and each direction then costs one run of the HVP tape, whose
only outputs are f and H v: what the caller does not read is not computed.
"""

from __future__ import annotations

import numpy as np

from derivd.engines.common import Wrt, check_deadline, chunk_size, or_zeros, require_dense, require_scalar
from derivd.engines import reverse
from derivd.engines.reverse import gradient_nodes
from derivd.transforms import jvp as jvp_transform


def _hvp_tape(fn, wrt: Wrt, batch: tuple[int, ...], gradient: bool):
    """Tape (point, directions) -> (f, [grad per input,] H v per input), zeros where structurally
    zero. Without ``gradient`` the gradient is no output, so the tape keeps only what H v needs
    (no final accumulation into the gradient, one output array fewer to write)."""

    def build():
        grads = gradient_nodes(fn, wrt)
        tangents = [fn.extra_input(f"__hv_{name}", batch + s) for name, s in zip(wrt.names, wrt.shapes)]
        hv = or_zeros(fn, jvp_transform(fn.graph, wrt.nodes, tangents, grads), [batch + s for s in wrt.shapes])
        return tangents, [fn.output] + (grads if gradient else []) + hv

    return fn.tape(("hvp" if gradient else "hv", tuple(wrt.names), batch), build)


def hvp(fn, values, wrt_names, v: dict[str, np.ndarray]):
    """f(x) and H v for one direction ``v`` (per-input arrays)."""
    require_scalar(fn.out_shape, "hvp")
    wrt = fn.wrt(wrt_names)
    tape, seconds = _hvp_tape(fn, wrt, (), gradient=False)
    y, *hv = fn.run(tape, values, *[v[n] for n in wrt.names])
    return np.asarray(y), [np.asarray(h) for h in hv], seconds


def hvps(fn, values, wrt_names, directions: np.ndarray, gradient: bool = False):
    """f(x), grad f(x) (None unless ``gradient``) and the ``(k, n)`` block H V^T for ``k`` flat
    directions, in one pass."""
    require_scalar(fn.out_shape, "hvp")
    wrt = fn.wrt(wrt_names)
    k = directions.shape[0]
    tape, seconds = _hvp_tape(fn, wrt, (k,), gradient)
    y, *rest = fn.run(tape, values, *wrt.split(directions, (k,)))
    m = len(wrt.names) if gradient else 0
    grads = [np.asarray(g) for g in rest[:m]] if gradient else None
    return np.asarray(y), grads, wrt.join(rest[m:], (k,)), seconds


# Tangents of the forward-over-reverse graph: about as wide as the widest primal
# node, several alive at once.
WIDTH_FACTOR = 4


def hvp_blocks(fn, values, wrt_names, directions: np.ndarray, settings, gradient: bool = False):
    """f(x), grad f(x) (None unless ``gradient``) and V H for ``(k, n)`` flat directions V, in passes
    of a bounded batch."""
    k = directions.shape[0]
    b = chunk_size(max(k, 1), fn.widest_node_bytes * WIDTH_FACTOR, settings.forward_chunk_bytes)
    blocks, seconds, y, grads = [], 0.0, None, None
    for start in range(0, max(k, 1), b):
        check_deadline()
        chunk = directions[start:start + b]
        if chunk.shape[0] < b:
            chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], directions.shape[1]))])
        y, grads, block, s = hvps(fn, values, wrt_names, chunk, gradient)
        seconds += s
        blocks.append(block[: max(0, min(b, k - start))])
    return y, grads, np.concatenate(blocks, axis=0), seconds


def hessian(fn, values, wrt_names, settings):
    """f(x), grad f(x) and the dense ``(n, n)`` Hessian: the HVPs of the identity's rows."""
    require_scalar(fn.out_shape, "hessian")
    n = fn.wrt(wrt_names).n
    require_dense(n, n, "Hessian", settings)
    y, grads, rows, seconds = hvp_blocks(fn, values, wrt_names, np.eye(n), settings, gradient=True)
    return y, grads, rows.T, seconds


class HvpSession:
    """Many HVPs at one point: ``value`` and ``gradient`` once, then ``hvp(v)`` per direction."""

    def __init__(self, fn, values, wrt_names):
        require_scalar(fn.out_shape, "hvp")
        self.fn = fn
        self.values = values
        self.wrt = fn.wrt(wrt_names)
        self.tape, self.compile_seconds = _hvp_tape(fn, self.wrt, (), gradient=False)
        y, grads, seconds = reverse.gradient(fn, values, wrt_names)
        self.compile_seconds += seconds
        self.value = float(np.asarray(y).reshape(-1)[0])
        self.gradient = dict(zip(self.wrt.names, (np.asarray(g, dtype=np.float64) for g in grads)))

    def hvp(self, v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """H v for one direction, per-input arrays already shaped like the inputs."""
        out = self.fn.run(self.tape, self.values, *[v[n] for n in self.wrt.names])
        return dict(zip(self.wrt.names, (np.asarray(h, dtype=np.float64) for h in out[1:])))
