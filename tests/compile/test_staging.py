"""Tier 2's aligned staging of numpy arguments (compile/staging.py): what XLA reads in place.

A large misaligned array is handed over as an aligned copy with its values; small or aligned
ones pass as they are. Buffers are reused between runs, so an output sharing memory with one
must be copied before the next run writes it, and a reused buffer must hold the new run's
values (the tier-2 gradient at a second point, against its analytic value).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from derivd.compile import staging  # noqa: E402
from derivd.config import Settings  # noqa: E402
from derivd.core import Request, Service  # noqa: E402

N = 20000  # 160 KB: above allocator.ALIGNED_MIN_BYTES


def placed(values: np.ndarray, offset: int) -> np.ndarray:
    """``values`` in an array whose data starts ``offset`` bytes past a 64-byte boundary."""
    raw = np.empty(values.size + 8)
    start = (-raw.ctypes.data % 64 + offset) // 8
    out = raw[start:start + values.size]
    out[...] = values
    assert out.ctypes.data % 64 == offset
    return out


def misaligned(values: np.ndarray) -> np.ndarray:
    return placed(values, 8)


def test_large_misaligned_arrays_are_staged_aligned_the_rest_pass_as_they_are():
    x = misaligned(np.linspace(-1, 1, N))
    small = misaligned(np.ones(100))[:99]
    aligned = placed(np.ones(N), 0)
    args, staged = staging.stage([x, small, 2.5, aligned])
    try:
        assert args[0] is not x and args[0].ctypes.data % staging.ALIGNMENT == 0
        np.testing.assert_array_equal(args[0], x)
        assert args[1] is small and args[2] == 2.5 and args[3] is aligned
        assert staged == [args[0]]
    finally:
        staging.release(staged, [])


def test_an_output_sharing_a_staged_buffer_is_copied_before_the_buffer_is_reused():
    args, staged = staging.stage([misaligned(np.arange(N, dtype=float))])
    (out,) = staging.release(staged, [args[0][::2]])  # as if the run returned (a view of) its input
    again, staged = staging.stage([misaligned(-np.ones(N))])
    assert again[0] is args[0]  # the same buffer, written with the new values
    np.testing.assert_array_equal(out, np.arange(0, N, 2, dtype=float))
    staging.release(staged, [])


def test_tier_2_reads_staged_arguments_and_a_reused_buffer_holds_the_new_point():
    service = Service(Settings(xla_tier="always", xla_cache_dir=""))
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = misaligned(rng.uniform(-2, 2, N))
        got = service.compute("gradient", Request(function={"dsl": "sum(sin(x) * x)"}, at={"x": x}))[0]
        assert got["tier"] == 2
        np.testing.assert_allclose(got["gradient"]["x"], np.cos(x) * x + np.sin(x), rtol=1e-13, atol=1e-15)
        assert ((N,), "<f8") in staging._FREE  # x went through a staged buffer
