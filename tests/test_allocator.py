"""The allocator tuning `derivd serve` applies: accepted by glibc, harmless twice."""

import platform

import pytest

from derivd.allocator import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_tuning():
    assert tune_allocator() is True
    assert tune_allocator() is True
