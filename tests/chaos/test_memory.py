"""Memory follows the configured bounds, whatever cheap requests arrive: many registrations with
large constants, and many new programs each carrying a large comment. RSS is sampled from the
kernel (psutil) before and after; the slack allows for the allocator and the interpreter, and is
far below what the same requests held when the caches kept everything."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from derivd.errors import LimitExceeded, NotFound

MiB = 2**20
SLACK = 40 * MiB


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_registrations_are_bounded_in_bytes_the_oldest_forgotten():
    """60 registrations of 4 MiB constants (240 MiB) into a 32 MiB store: RSS grows by at most the
    bound and the slack; the recent ids answer with their numbers, the oldest are 404."""
    service = Service(Settings(function_cache_bytes=32 * MiB))
    before = rss()
    ids = []
    for k in range(60):
        w = np.full(MiB // 2, float(k))  # 4 MiB
        ids.append(service.register_function("sum(w) * x[0]", {"w": w}).id)
    grown = rss() - before
    print(f"chaos memory: 60 registrations of 4 MiB, bound 32 MiB: RSS +{grown / MiB:.0f} MiB")
    assert grown <= 32 * MiB + SLACK, f"RSS grew by {grown / MiB:.0f} MiB"
    assert service.functions.local.nbytes <= 32 * MiB
    out, _ = service.compute("gradient", Request(function={"id": ids[-1]}, at={"x": np.array([2.0])}))
    np.testing.assert_allclose(out["gradient"]["x"], [59.0 * (MiB // 2)], rtol=1e-15)
    with pytest.raises(NotFound):
        service.get_function(ids[0])
    with pytest.raises(LimitExceeded) as e:  # one function over the whole bound: refused, not stored
        service.register_function("sum(w)", {"w": np.zeros(5 * MiB)})
    assert e.value.detail["limit"] == "function_cache_bytes"


def test_new_programs_are_bounded_in_bytes():
    """300 programs, each new (a 200 KB comment of its own): 60 MB of text; the tape cache and the
    inline table keep at most their bound (16 MiB) of it."""
    from derivd.dispatch import Dispatcher

    dispatcher = Dispatcher(Service(Settings(tape_cache_bytes=16 * MiB)))
    x = np.array([0.5, -1.0])
    before = rss()
    for k in range(300):
        program = f"# {k:04d}{'.' * 200_000}\nsum(x ** 2) * {k + 1}"
        out, _ = dispatcher.submit("gradient", Request(function={"dsl": program}, at={"x": x}))
        np.testing.assert_allclose(out["gradient"]["x"], 2 * x * (k + 1), rtol=1e-15)
    grown = rss() - before
    print(f"chaos memory: 300 new programs of 200 KB, bound 16 MiB: RSS +{grown / MiB:.0f} MiB")
    dispatcher.close()
    assert grown <= 16 * MiB + SLACK, f"RSS grew by {grown / MiB:.0f} MiB"
    assert dispatcher.service.cache._items.nbytes <= 16 * MiB
