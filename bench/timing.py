"""Wall-clock timing shared by the bench scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import time


def best(fn, repeat: int, budget_s: float = 3.0) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` runs (or as many as fit the budget, at least 3):
    the minimum is the run least disturbed by the other work on a shared machine."""
    times, start = [], time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return min(times)
