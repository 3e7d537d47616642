"""Workers killed under load: every request is answered, and answered right.

Clients keep sending gradients through a pool of two local workers; both are SIGKILLed at once,
then one alone. The supervisor starts replacements at once and requests wait for them within their
deadline: no 503, no wrong number, and the longest wait is about a worker's start."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from derivd.cache import CacheStats
from derivd.config import Settings
from derivd.core import Request
from derivd.dispatch.pools import GrpcPool
from derivd.workers.supervisor import Supervisor
from tests.support import wait_for

CLIENTS = 4


@pytest.fixture(scope="module")
def two_workers():
    supervisor = Supervisor(Settings(request_timeout_s=30.0), 2).start()
    pool = GrpcPool(supervisor.target, supervisor.settings, CacheStats())
    yield supervisor, pool
    pool.close()
    supervisor.stop()


def load(pool, stop: threading.Event, answers: list, errors: list, k: int):
    i = 0
    while not stop.is_set():
        x = np.array([0.1 * k, 0.001 * i, -0.5])
        req = Request(function={"dsl": "sum(cos(x) * x[0])"}, at={"x": x}, deadline=time.monotonic() + 30.0)
        t0 = time.monotonic()
        try:
            out, _ = pool.run("gradient", req, "reverse")
        except Exception as e:  # noqa: BLE001  every failure is counted, none is expected
            errors.append(repr(e))
        else:
            answers.append((x, np.asarray(out["gradient"]["x"]), time.monotonic() - t0))
        i += 1


@pytest.mark.parametrize("victims", ["both", "one"])
def test_killing_workers_under_load_loses_and_corrupts_nothing(two_workers, victims):
    supervisor, pool = two_workers
    answers, errors, stop = [], [], threading.Event()
    threads = [threading.Thread(target=load, args=(pool, stop, answers, errors, k)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    wait_for(lambda: len(answers) >= 50, "the load to be running", 30)
    wait_for(lambda: supervisor.spare_ready, "the spare worker", 60)
    before = supervisor.restarts
    pids = supervisor.pids if victims == "both" else supervisor.pids[:1]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: supervisor.restarts == before + len(pids), "the supervisor to see the deaths", 30)
    counted = len(answers)
    wait_for(lambda: len(answers) >= counted + 50, "answers from the replacements", 60)
    stop.set()
    for t in threads:
        t.join(60)
    assert errors == [], errors[:3]
    for x, got, _ in answers:
        want = -np.sin(x) * x[0]
        want[0] += np.sum(np.cos(x))
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    longest = max(seconds for _, _, seconds in answers)
    print(f"chaos worker kill ({victims}): {len(answers)} answers, 0 errors, longest {longest:.2f} s")
