"""SIGTERM to ``derivd serve --gateways 2`` (with and without a local worker) while a runaway
request runs: the parent and every process it started (gateway processes, workers, the spare)
exit within ``gateway.server.SHUTDOWN_BOUND_S``, and none is left behind holding a core.

Every process of the run carries a marker in its environment, so one that escaped the tree (an
orphan re-parented to init, a replacement started during the shutdown) is still found."""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest

from derivd.gateway.server import SHUTDOWN_BOUND_S
from tests.chaos.serving import cpu_seconds, send_runaway, serve
from tests.support import free_port, wait_for

MARK = "DERIVD_TEST_SHUTDOWN_RUN"


def marked(run: str) -> list[psutil.Process]:
    """Every live process whose environment carries this run's marker."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == run and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def quiet(procs: list[psutil.Process]) -> bool:
    before = cpu_seconds(procs)
    time.sleep(1.0)
    return cpu_seconds(procs) - before < 0.2


@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_ends_every_gateway_and_worker_within_the_bound(own_redis, workers):
    port, run = free_port(), uuid.uuid4().hex
    env = {**os.environ, MARK: run, "DERIVD_REDIS_URL": own_redis.url, "DERIVD_TAPE_CACHE_HMAC_KEY": run,
           "DERIVD_REQUEST_TIMEOUT_S": "600", "DERIVD_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    proc = None
    try:
        proc = serve(port, env, "--gateways", "2", "--workers", str(workers), ready_s=90)
        tree = marked(run)
        wait_for(lambda: quiet(tree), "the processes to finish starting (under 0.2 s of CPU in 1 s)", 90)
        idle = cpu_seconds(tree)
        caller, answers = send_runaway(port, SHUTDOWN_BOUND_S + 30)
        wait_for(lambda: cpu_seconds(tree) > idle + 1.0, "the runaway to be computing (1 s of CPU)", 60)
        assert len(tree) >= 3 + 2 * workers, [p.cmdline() for p in tree]  # parent, 2 gateways, worker + spare
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        gone, alive = psutil.wait_procs(tree, timeout=SHUTDOWN_BOUND_S)
        stopped_after = time.monotonic() - sent
        left = marked(run)
        print(f"chaos shutdown, --gateways 2 --workers {workers}: {len(tree)} processes ended in "
              f"{stopped_after:.1f} s; exit status {proc.poll()}")
        assert not alive and not left, [(p.pid, p.cmdline()) for p in alive + left]
        assert proc.wait(1) == 0
        caller.join(30)
        print(f"  the runaway's caller got {answers}")
        assert answers and answers[0] != 200  # answered (503) or its connection closed
    finally:
        for p in marked(run):
            p.kill()
        if proc is not None:
            proc.wait()
