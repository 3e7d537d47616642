"""The memory settings `derivd serve` applies: the allocator tuning accepted by glibc and harmless
twice; the start-up heap frozen out of the collector's walks (in a child, so that this test process
keeps its own collector as it is)."""

import json
import platform
import subprocess
import sys

import pytest

from derivd.allocator import tune_allocator


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
