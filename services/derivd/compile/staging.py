"""Numpy arguments XLA reads in place: misaligned arrays copied into aligned buffers kept for reuse.

XLA's CPU runtime reads a numpy argument in place only if its data is 64-byte aligned. numpy
aligns large arrays to 16 bytes. Arrays decoded from bytes (REST's base64, gRPC, the session socket)
are allocated aligned by their decoder (``allocator.aligned``: it copies anyway), but not the others
(below). XLA copies a misaligned array into a buffer it allocates for that one run, whose fresh pages
are faulted in every time: Rosenbrock's HVP at n = 1e6 (two 8 MB inputs) spent about 1.5 ms of its
5.7 ms there (bench/tiers.py). ``stage``
copies such an array into an aligned buffer of the same shape kept from an earlier run (its pages
mapped already), which XLA then reads in place; ``release`` takes the run's outputs, as numpy
arrays (the run is over), copies any that shares memory with a staged buffer (jax hands an input
returned unchanged back as the output), and keeps the buffers for the next run, up to
``KEPT_BYTES`` (least recently used shapes dropped first).

Arrays decoded from JSON lists are numpy's own (``np.asarray`` allocates them): aligning those in the
decoder would cost a copy on every request, tier 1's included, where staging copies only for tier 2,
into pages already mapped. So would a worker's ``frombuffer`` views.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from derivd.allocator import ALIGNED_MIN_BYTES, ALIGNMENT, aligned_empty

KEPT_BYTES = 64 << 20  # buffers kept per process between runs

_FREE: OrderedDict[tuple, list] = OrderedDict()  # (shape, dtype) -> buffers, least recently used first
_KEPT = [0]  # bytes in _FREE
_LOCK = threading.Lock()


def stage(args, at=None) -> tuple[list, list]:
    """``args`` with each numpy array XLA would copy (misaligned or not C-contiguous, at least
    ``ALIGNED_MIN_BYTES``: smaller ones XLA copies in microseconds) replaced by an aligned copy; and
    those copies, for ``release``. ``at``: the positions that may hold such an array (all by default):
    a tape knows them from its inputs' shapes, and the test of an array's address costs ~0.8 us."""
    out, staged = list(args), []
    for i in range(len(out)) if at is None else at:
        a = out[i]
        if type(a) is np.ndarray and worth_staging(a.nbytes) and (
                a.ctypes.data % ALIGNMENT or not a.flags.c_contiguous):
            buffer = _take(a.shape, a.dtype)
            np.copyto(buffer, a)
            staged.append(buffer)
            out[i] = buffer
    return out, staged


def worth_staging(nbytes: int) -> bool:
    """Whether ``stage`` aligns an array of ``nbytes`` that XLA would copy (a tape whose inputs are all smaller
    skips ``stage``)."""
    return nbytes >= ALIGNED_MIN_BYTES


def release(staged: list, outputs: list) -> list:
    """The run's numpy ``outputs``, none sharing memory with a buffer in ``staged``; those buffers kept."""
    if not staged:
        return outputs
    outputs = [o.copy() if any(np.may_share_memory(o, b) for b in staged) else o for o in outputs]
    with _LOCK:
        for b in staged:
            if b.nbytes > KEPT_BYTES:
                continue
            key = (b.shape, b.dtype.str)
            _FREE.setdefault(key, []).append(b)
            _FREE.move_to_end(key)
            _KEPT[0] += b.nbytes
        while _KEPT[0] > KEPT_BYTES:
            key, buffers = next(iter(_FREE.items()))
            _KEPT[0] -= buffers.pop(0).nbytes
            if not buffers:
                del _FREE[key]
    return outputs


def _take(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A kept buffer of this shape and dtype, else a new aligned one."""
    with _LOCK:
        buffers = _FREE.get((shape, dtype.str))
        if buffers:
            buffer = buffers.pop()
            _KEPT[0] -= buffer.nbytes
            if not buffers:
                del _FREE[(shape, dtype.str)]
            return buffer
    return aligned_empty(shape, dtype)
