"""Runaway programs: whatever the mode, work stops at the deadline, and what could not finish is
refused before it starts.

A runaway here is a loop node of 50 000 products of 300 x 300 matrices (2.7e12 flops: minutes),
under ``max_program_flops``, so it runs until its deadline; the CPU the process (the gateway's, or
the worker's) and its children spend after the 504 is read from the kernel through psutil: with tier
2 on (``DERIVD_XLA_TIER=always``) a request waits for its XLA compile, which runs in a child process
(compile/xla_process.py) that the 504 must stop too. Each test warms its process first (one small
request): with tier 2 on, the first compile imports jax and starts the compile process, once per
process, which is not the runaway's work."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import psutil
import pytest

from derivd import clock
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.deadlines import deadline
from derivd.dispatch import Dispatcher
from derivd.dsl import InputSpec
from derivd.engines.function import CompiledFunction
from derivd.errors import DeadlineExceeded, LimitExceeded
from derivd.ops.registry import FLOAT

LOOPED = "H = eye(300) * 0.5 + x\nfor i in range(50000):\n    H = tanh(H @ H)\nsum(H)"
# 200 products of 1000 x 1000 matrices as straight lines (few enough nodes to unroll): 4e11 flops.
UNROLLED = "H = eye(1000) * 0.5 + x\nfor i in range(200):\n    H = tanh(H @ H) + i\nsum(H)"
# The program: 50 000 products of 2000 x 2000 matrices, 8e14 flops.
HOURS = "H = eye(2000) * 0.5 + x\nfor i in range(50000):\n    H = tanh(H @ H)\nsum(H)"
AFTER_S = 2.0  # how long the CPU is watched after a 504
CPU_AFTER_MAX_S = 0.5


def cpu_after(seconds: float, process: psutil.Process) -> float:
    start = tree_cpu(process)
    time.sleep(seconds)
    return tree_cpu(process) - start


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds of ``process`` and its children: the live ones' own and, for those that exited (a
    compile process killed), what the kernel added to their parent's times when it reaped them."""
    total = sum(process.cpu_times()[:4])
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:4])
    return total


def warm() -> Request:
    """A small request with time for a first compile (the compile process starting, jax imported)."""
    return Request(function={"dsl": "sum(x * x)"}, at={"x": np.array([0.1, 0.2])}, deadline=time.monotonic() + 60)


@pytest.fixture
def dispatcher():
    Service(Settings()).compute("evaluate", warm())
    d = Dispatcher(Service(Settings(request_timeout_s=0.5)))
    yield d
    d.close()


@pytest.mark.parametrize("program", [LOOPED, UNROLLED], ids=["loop", "unrolled"])
def test_in_process_a_504_stops_the_work(dispatcher, program):
    """The default mode (--workers 0): the 504 at 0.5 s, then at most 0.5 s of CPU in the next 2 s."""
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        dispatcher.submit("evaluate", Request(function={"dsl": program}, at={"x": np.array(0.1)}))
    assert time.monotonic() - t0 < 2.0
    spent = cpu_after(AFTER_S, psutil.Process())
    print(f"chaos runaway in process: 504 after {time.monotonic() - t0 - AFTER_S:.2f} s, then {spent:.3f} s CPU in 2 s")
    assert spent <= CPU_AFTER_MAX_S


def test_a_program_that_cannot_finish_is_refused_before_it_runs(dispatcher):
    """The issue's program: 413 in milliseconds, naming the limit and an estimate at least the
    products' own 2 n^3 operations each (the floor numpy cannot beat)."""
    cpu0, t0 = time.process_time(), time.monotonic()
    for endpoint in ("evaluate", "gradient", "hessian"):
        with pytest.raises(LimitExceeded) as e:
            dispatcher.submit(endpoint, Request(function={"dsl": HOURS}, at={"x": np.array(0.1)}))
        assert e.value.status == 413 and e.value.detail["limit"] == "max_program_flops"
        assert e.value.detail["value"] >= 50000 * 2 * 2000 ** 3 and e.value.detail["max"] == 1e13
    assert time.monotonic() - t0 < 5.0 and time.process_time() - cpu0 < 5.0


def test_a_loop_and_a_long_tape_check_the_deadline_but_a_short_tape_does_not():
    """Under a deadline already past (the clock is not waited on), a loop node stops before its
    first iteration and a long straight tape within its first lines; a small tape, the warm path,
    carries no check at all."""
    settings = Settings()
    x = np.full((50, 50), 0.01)
    specs = {"x": InputSpec((50, 50), FLOAT, "at")}
    for program in (LOOPED.replace("300", "50"), UNROLLED.replace("1000", "50")):
        tape = CompiledFunction(program, specs, settings).eval_tape()[0]
        np.testing.assert_allclose(tape.run(x)[0], _numpy(program, x), rtol=1e-12)
        with deadline(clock.now() - 1.0, 1.0), pytest.raises(DeadlineExceeded):
            tape.run(x)
    assert "_check_deadline" in tape.source
    small = CompiledFunction("sum(sin(x) * x)", specs, settings).eval_tape()[0]
    assert "_check_deadline" not in small.source


def _numpy(program: str, x: np.ndarray) -> float:
    n, count = x.shape[0], int(program.split("range(")[1].split(")")[0])
    h = np.eye(n) * 0.5 + x
    for i in range(count):
        h = np.tanh(h @ h) + (i if "+ i" in program else 0)
    return float(np.sum(h))


def test_through_a_worker_the_504_stops_the_work_without_recycling_it(worker_pool):
    """--workers N: the worker stops the request itself at its deadline (no exit, no restart) and
    spends at most 0.5 s of CPU in the 2 s after the 504."""
    supervisor, pool = worker_pool
    process = psutil.Process(supervisor.pids[0])
    before = supervisor.restarts
    pool.run("evaluate", warm(), "forward")
    with pytest.raises(DeadlineExceeded):
        pool.run("evaluate", _req(LOOPED, time.monotonic() + 0.5), "forward")
    spent = cpu_after(AFTER_S, process)
    print(f"chaos runaway in a worker: then {spent:.3f} s CPU in 2 s")
    assert spent <= CPU_AFTER_MAX_S
    assert supervisor.restarts == before and process.is_running()


def _req(program: str, at: float) -> Request:
    return Request(function={"dsl": program}, at={"x": np.array(0.1)}, deadline=at)
