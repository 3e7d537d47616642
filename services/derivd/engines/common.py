"""What every engine shares: wrt bookkeeping, chunking, the dense-answer limit, and the request's deadline."""

from __future__ import annotations

import itertools
import math

import numpy as np

from derivd.deadlines import check as check_deadline, deadline  # noqa: F401  (the engines' names for them)
from derivd.errors import LimitExceeded, ShapeError


class Wrt:
    """The differentiated inputs, in ``wrt`` order, with their slots in a flat vector."""

    def __init__(self, fn, names: list[str]):
        self.nodes = [fn.input_node(n) for n in names]
        self._slots(names, [n.shape for n in self.nodes])

    @classmethod
    def of_shapes(cls, names: list[str], shapes: list[tuple[int, ...]]) -> "Wrt":
        """Slots for inputs that have no graph (a black box's ``x``)."""
        wrt = cls.__new__(cls)
        wrt.nodes = []
        wrt._slots(names, shapes)
        return wrt

    def _slots(self, names, shapes):
        self.names = list(names)
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = [0, *itertools.accumulate(self.sizes)]
        self.n = self.offsets[-1]

    def split(self, flat: np.ndarray, batch: tuple[int, ...] = ()) -> list[np.ndarray]:
        """Cut a ``batch + (n,)`` array into per-input arrays shaped ``batch + shape``."""
        return [np.ascontiguousarray(flat[..., a:b]).reshape(batch + s)
                for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]

    def join(self, parts: list, batch: tuple[int, ...]) -> np.ndarray:
        """Per-input arrays (``None`` = zero) -> one ``batch + (n,)`` array."""
        out = np.zeros(batch + (self.n,))
        for p, a, b in zip(parts, self.offsets[:-1], self.offsets[1:]):
            if p is not None:
                out[..., a:b] = np.reshape(p, batch + (b - a,))
        return out


def require_dense(m: int, n: int, what: str, settings, advice: str = "") -> None:
    """Refuse a dense m x n ``what`` over ``max_jacobian_entries`` before anything computes it: the
    one check of that limit, for the engines and for the service's earlier checks alike."""
    limit = settings.max_jacobian_entries
    if m * n > limit:
        raise LimitExceeded(f"a {m} x {n} {what} has {m * n} entries, over the limit max_jacobian_entries={limit}"
                            + (f"; {advice}" if advice else ""), limit="max_jacobian_entries", value=m * n,
                            max=limit)


def chunk_size(total: int, per_item_bytes: int, budget_bytes: int) -> int:
    """How many seeds fit one pass within ``budget_bytes`` (at least 1, at most ``total``)."""
    return max(1, min(total, budget_bytes // max(per_item_bytes, 1)))


def or_zeros(fn, nodes: list, shapes: list[tuple[int, ...]]) -> list:
    """Transform results with structural zeros (``None``) made zero arrays, for a tape's outputs."""
    return [n if n is not None else fn.graph.apply("zeros", (), {"shape": tuple(s)}) for n, s in zip(nodes, shapes)]


def require_scalar(out_shape: tuple[int, ...], endpoint: str) -> None:
    """Refuse ``endpoint`` (a gradient, an HVP, a Hessian) of an output with more than one element: the
    one check of it, for programs and black boxes, by any engine."""
    if math.prod(out_shape) != 1:
        raise ShapeError(f"{endpoint} needs a scalar output (one element); the output has shape "
                         f"{list(out_shape)}", shape=list(out_shape), code="not_scalar")
