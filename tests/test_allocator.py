"""The memory settings `derivd serve` applies: the allocator tuning accepted by glibc and harmless
twice; the start-up heap frozen out of the collector's walks (in a child, so that this test process
keeps its own collector as it is); large arrays decoded from the wire aligned for tier 2, with their
values."""

import base64
import json
import platform
import subprocess
import sys

import numpy as np
import pytest

from derivd.allocator import ALIGNED_MIN_BYTES, ALIGNMENT, aligned, aligned_empty, tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_tuning():
    assert tune_allocator() is True
    assert tune_allocator() is True


FREEZE = """
import gc, json
import derivd.core, derivd.gateway.app
from derivd.allocator import freeze_heap
before = len(gc.get_objects())
freeze_heap()
kept = [[i] for i in range(1000)]  # allocated afterwards: still the collector's
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}))
"""


def test_the_start_up_heap_is_frozen_and_later_objects_are_not():
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True, timeout=120, check=True)
    counts = json.loads(out.stdout)
    assert counts["before"] > 50_000  # the server's imports: what a full collection walked each time
    assert counts["frozen"] >= 0.9 * counts["before"]
    assert 1000 <= counts["walked"] < 5000


BIG = 20000  # 160 KB as float64: above ALIGNED_MIN_BYTES


@pytest.mark.parametrize("values,dtype", [
    (np.linspace(-1, 1, BIG), None), (np.arange(BIG, dtype=np.int32).reshape(100, 200), np.float64),
    (np.arange(BIG, dtype=np.int32), np.int64), (np.arange(BIG) % 3 == 0, None), (np.linspace(0, 1, 7), None)])
def test_an_aligned_copy_holds_the_values_on_a_64_byte_boundary_when_large(values, dtype):
    got = aligned(values, dtype)
    want = values.astype(dtype or values.dtype)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, want)
    assert not np.shares_memory(got, values)
    if want.nbytes >= ALIGNED_MIN_BYTES:
        assert got.ctypes.data % ALIGNMENT == 0
    assert aligned_empty((3, 0), np.float64).shape == (3, 0)


def test_every_decoder_of_wire_bytes_hands_large_arrays_aligned():
    """REST's base64 form and gRPC's ``Array`` (the session socket's too) share ``array_from_bytes``."""
    from derivd.gateway import codecs
    from derivd.grpc_api import convert

    x = np.random.default_rng(0).normal(size=(BIG // 4, 4))
    wire = {"dtype": "float64", "shape": list(x.shape), "data": base64.b64encode(x.tobytes()).decode()}
    for got in (codecs.decode(wire, "at.x"), convert.to_numpy(convert.to_array(x), "at.x")):
        np.testing.assert_array_equal(got, x)
        assert got.dtype == np.float64 and got.ctypes.data % ALIGNMENT == 0 and got.flags.writeable
    k = np.arange(BIG, dtype=np.int64)
    wire = {"dtype": "int64", "shape": [BIG], "data": base64.b64encode(k.tobytes()).decode()}
    got = codecs.decode(wire, "constants.k", integers=True)
    assert got.dtype == np.int64 and got.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(got, k)
