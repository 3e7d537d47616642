"""Conforming a rule's result to its node's (batched) shape: the transforms' one shape bookkeeping."""

from derivd.ops import apply
from derivd.ops.registry import unbroadcast


def conform(x, shape: tuple[int, ...], nbatch: int):
    """Make a rule's result exactly ``shape`` (= batch + primal shape).

    Rules may return a result that broadcasts to the primal's shape (``ta`` of
    ``a + b`` when only ``a`` varies) or, for cotangents, one that must be summed
    back to it; this is the one place that reconciles both.
    """
    if x.shape == shape:
        return x
    if len(x.shape) > len(shape) or any(a != b and a != 1 for a, b in zip(x.shape[::-1], shape[::-1])):
        return unbroadcast(x, nbatch, shape[nbatch:])
    return apply("broadcast_to", x, shape=shape, in_ndim=len(x.shape))
