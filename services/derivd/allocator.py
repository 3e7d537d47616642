"""glibc malloc tuning for the server processes (gateway and workers): large tapes reuse their pages.

Tapes allocate and free arrays of the same large sizes on every run. glibc
serves allocations above its mmap threshold with fresh mappings, so each run
pays page faults on memory it just returned (about half the time of a large
derivative tape). Raising the mmap threshold and keeping freed memory in the
heap (bounded by ``trim``) makes a warm tape reuse its pages: the Rosenbrock
gradient at n = 1e6 runs in about half the time. glibc caps the mmap threshold
at 32 MiB on 64-bit systems, so larger arrays are still mapped afresh. A no-op
off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


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
