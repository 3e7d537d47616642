"""Second order: Hessian-vector products as forward over reverse.

For a scalar f, the gradient program g(x) = vjp(f)(x, 1) is itself a graph,
and its JVP in a direction v is the Hessian-vector product

    H v = d/dt grad f(x + t v) |_{t=0} = jvp(vjp(f))(x; v),

one tape costing a small constant times f, never the n x n Hessian. A batch
of k directions (shape ``(k,) + shape(x)`` per input) is one pass, as in
forward mode, so H itself is the HVP of the identity's rows.

``HvpSession`` answers many directions at one point: the function, point and
tape are resolved once, the value and gradient are computed once, and each
direction then costs one run of the HVP tape.
"""

from __future__ import annotations

import numpy as np

from derivd.engines.common import Wrt
from derivd.engines.reverse import require_scalar
from derivd.transforms import jvp as jvp_transform
from derivd.transforms import vjp as vjp_transform


def _hvp_tape(fn, wrt: Wrt, batch: tuple[int, ...]):
    """Tape (point, directions) -> (f, grad per input, H v per input), zeros where structurally zero."""

    def build():
        shape = fn.out_shape
        ct = fn.graph.const(1.0) if shape == () else fn.graph.apply("ones", (), {"shape": shape})
        grads = vjp_transform(fn.graph, wrt.nodes, [fn.output], [ct])
        grads = [g if g is not None else fn.graph.apply("zeros", (), {"shape": s})
                 for g, s in zip(grads, wrt.shapes)]
        tangents = [fn.extra_input(f"__hv_{name}", batch + s) for name, s in zip(wrt.names, wrt.shapes)]
        hv = jvp_transform(fn.graph, wrt.nodes, tangents, grads)
        hv = [h if h is not None else fn.graph.apply("zeros", (), {"shape": batch + s})
              for h, s in zip(hv, wrt.shapes)]
        return tangents, [fn.output] + grads + hv

    return fn.tape(("hvp", tuple(wrt.names), batch), build)


def hvp(fn, values, wrt_names, v: dict[str, np.ndarray]):
    """f(x), grad f(x) and H v for one direction ``v`` (per-input arrays)."""
    require_scalar(fn, "hvp")
    wrt = Wrt(fn, wrt_names)
    tape, seconds = _hvp_tape(fn, wrt, ())
    y, *rest = fn.run(tape, values, *[v[n] for n in wrt.names])
    k = len(wrt.names)
    return np.asarray(y), [np.asarray(g) for g in rest[:k]], [np.asarray(h) for h in rest[k:]], seconds


def hvps(fn, values, wrt_names, directions: np.ndarray):
    """f(x), grad f(x) and the ``(k, n)`` block H V^T for ``k`` flat directions, in one pass."""
    require_scalar(fn, "hvp")
    wrt = Wrt(fn, wrt_names)
    k = directions.shape[0]
    tape, seconds = _hvp_tape(fn, wrt, (k,))
    y, *rest = fn.run(tape, values, *wrt.split(directions, (k,)))
    m = len(wrt.names)
    return (np.asarray(y), [np.asarray(g) for g in rest[:m]], wrt.join(rest[m:], (k,)), seconds)


class HvpSession:
    """Many HVPs at one point: ``value`` and ``gradient`` once, then ``hvp(v)`` per direction."""

    def __init__(self, fn, values, wrt_names):
        require_scalar(fn, "hvp")
        self.fn = fn
        self.values = values
        self.wrt = Wrt(fn, wrt_names)
        self.tape, self.compile_seconds = _hvp_tape(fn, self.wrt, ())
        zero = [np.zeros(s) for s in self.wrt.shapes]
        y, *rest = fn.run(self.tape, values, *zero)
        self.value = float(np.asarray(y).reshape(-1)[0])
        self.gradient = dict(zip(self.wrt.names, (np.asarray(g, dtype=np.float64) for g in rest[: len(zero)])))

    def hvp(self, v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """H v for one direction, per-input arrays already shaped like the inputs."""
        out = self.fn.run(self.tape, self.values, *[v[n] for n in self.wrt.names])
        k = len(self.wrt.names)
        return dict(zip(self.wrt.names, (np.asarray(h, dtype=np.float64) for h in out[1 + k:])))
