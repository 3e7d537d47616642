"""Which requests run on the event loop: only those known to be quick, never black boxes or new work."""

from __future__ import annotations

import time

import numpy as np

from derivd.config import Settings
from derivd.core import ENDPOINTS, Request, Service
from derivd.dispatch import Dispatcher
from derivd.engines.function import CompiledFunction

GRADIENT = ENDPOINTS["gradient"]


def req(function, **at):
    return Request(function=function, at={k: np.asarray(v, dtype=float) for k, v in at.items()})


def test_only_requests_seen_to_be_quick_run_inline():
    quick = Dispatcher(Service(Settings())).quick
    quick.limit_s = 0.002
    small = req({"dsl": "sum(x**2)"}, x=[1.0, 2.0])
    key = quick.key(GRADIENT, small)
    assert not quick.is_quick(key)  # never seen: the thread pool
    quick.record(key, 0.0005)
    assert quick.is_quick(key)
    quick.record(key, 0.5)  # became slow: back to the pool
    assert not quick.is_quick(key)
    other_shape = quick.key(GRADIENT, req({"dsl": "sum(x**2)"}, x=[1.0, 2.0, 3.0]))
    assert other_shape != key and not quick.is_quick(other_shape)
    assert quick.key(GRADIENT, req({"blackbox": "sim"}, x=[1.0])) is None


def test_worker_pools_are_never_inline():
    dispatcher = Dispatcher(Service(Settings(pool_default="dns:///127.0.0.1:1")))
    try:
        assert dispatcher.quick.key(GRADIENT, req({"dsl": "sum(x)"}, x=[1.0])) is None
    finally:
        dispatcher.close()


def test_a_request_held_off_the_cpu_keeps_its_kind_inline(monkeypatch):
    """What counts is the CPU a kind takes, not the wall time: a request preempted on a busy machine
    (here: asleep 20 ms inside the engine) does not send its kind to the compute threads."""
    dispatcher = Dispatcher(Service(Settings(inline_compute_s=0.005)))
    try:
        small = req({"dsl": "sum(x**2)"}, x=[1.0, 2.0])
        dispatcher.submit("gradient", small)  # compiled
        dispatcher.submit("gradient", small)  # seen quick
        key = dispatcher.quick.key(GRADIENT, small)
        assert dispatcher.quick.is_quick(key)
        real = CompiledFunction.run  # every engine's tape runs through it
        monkeypatch.setattr(CompiledFunction, "run", lambda *args: time.sleep(0.02) or real(*args))
        answer, timings = dispatcher.submit("gradient", small)
        assert timings.queue == 0.0 and timings.compute >= 0.02  # inline, and the wall time says so
        np.testing.assert_allclose(answer["gradient"]["x"], [2.0, 4.0], rtol=1e-15)
        assert dispatcher.quick.is_quick(key) and dispatcher.quick.doubted(key)
        _, timings = dispatcher.submit("gradient", small)  # its CPU time measured: still quick
        assert timings.queue == 0.0 and timings.compute >= 0.02
        assert dispatcher.quick.is_quick(key) and not dispatcher.quick.doubted(key)
    finally:
        dispatcher.close()


def test_a_kind_that_became_slow_leaves_the_loop_once_its_cpu_time_says_so(monkeypatch):
    """Timed by the wall clock, a slow inline run makes its kind doubted; the next run, measured by CPU
    (busy here, not asleep), sends the kind to the compute threads."""
    dispatcher = Dispatcher(Service(Settings(inline_compute_s=0.005)))
    try:
        small = req({"dsl": "sum(x**2)"}, x=[1.0, 2.0])
        dispatcher.submit("gradient", small)
        dispatcher.submit("gradient", small)
        key = dispatcher.quick.key(GRADIENT, small)
        assert dispatcher.quick.is_quick(key) and not dispatcher.quick.doubted(key)
        real = CompiledFunction.run

        def busy(*args):
            end = time.thread_time() + 0.02
            while time.thread_time() < end:
                pass
            return real(*args)

        monkeypatch.setattr(CompiledFunction, "run", busy)
        for _ in range(2):  # timed by the wall clock, then by CPU: both inline
            _, timings = dispatcher.submit("gradient", small)
            assert timings.queue == 0.0
        assert not dispatcher.quick.is_quick(key)
        _, timings = dispatcher.submit("gradient", small)
        assert timings.queue > 0.0  # a compute thread's
    finally:
        dispatcher.close()
