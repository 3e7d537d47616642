"""Memory settings for the server processes (gateway and workers): glibc's malloc, so that large tapes
reuse their pages, and the garbage collector, so that it stops walking the start-up heap.

Tapes allocate and free arrays of the same large sizes on every run. glibc
serves allocations above its mmap threshold with fresh mappings, so each run
pays page faults on memory it just returned (about half the time of a large
derivative tape). Raising the mmap threshold and keeping freed memory in the
heap (bounded by ``trim``) makes a warm tape reuse its pages: the Rosenbrock
gradient at n = 1e6 runs in about half the time. glibc caps the mmap threshold
at 32 MiB on 64-bit systems, so larger arrays are still mapped afresh. A no-op
off glibc.

``freeze_heap``: a full collection of CPython's cyclic collector walks every
tracked object. After a server's imports (numpy, scipy, grpc, pydantic) about
100,000 long-lived objects make that a 35 ms pause, 66 ms once jax is loaded
for tier 2 (measured here), taken by whichever request happens to trigger it;
a session ask of 0.15 ms then waits for it. ``gc.freeze`` moves what is alive
to a permanent generation that collections skip (CPython's advice for servers);
what requests allocate afterwards is collected as before.

``aligned``: a request's large arrays sent as bytes (REST's base64, gRPC, the session socket) are
decoded into memory aligned to ``ALIGNMENT`` bytes. XLA's CPU runtime reads an argument so aligned in
place and copies any other (numpy aligns to 16 bytes), so tier 2 (compile/xla.py) would otherwise copy
each large input on every run (compile/staging.py: about 0.5 ms per 8 MB). The decoder copies the
bytes anyway, so copying them to an aligned place costs nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import numpy as np

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
ALIGNMENT = 64  # bytes: XLA's CPU runtime reads an argument aligned so in place
ALIGNED_MIN_BYTES = 1 << 16  # smaller arrays: XLA's own copy costs microseconds, an aligned one about 1 us more


def tune_allocator(mmap_threshold: int = 32 << 20, trim: int = 1 << 30, top_pad: int = 1 << 28) -> bool:
    """Ask glibc's malloc to keep large blocks in the heap; True when it agreed."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim), (M_TOP_PAD, top_pad)))


def freeze_heap(collect: bool = True) -> None:
    """Exempt every object alive now from future collections (after a collection, unless the caller is
    on a request's path: ``gc.freeze`` alone costs nothing)."""
    if collect:
        gc.collect()
    gc.freeze()


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """A new C-contiguous array whose data starts on an ``ALIGNMENT``-byte boundary (inside a slightly
    larger block: numpy's own allocation guarantees 16 bytes)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned(a: np.ndarray, dtype=None) -> np.ndarray:
    """A new array holding ``a``'s values as ``dtype`` (``a``'s own by default), ``ALIGNMENT``-aligned when
    it holds at least ``ALIGNED_MIN_BYTES``: what a decoder returns in place of ``a.astype(dtype)``."""
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    if a.size * dtype.itemsize < ALIGNED_MIN_BYTES:
        return a.astype(dtype)
    out = aligned_empty(a.shape, dtype)
    np.copyto(out, a, casting="unsafe")
    return out
