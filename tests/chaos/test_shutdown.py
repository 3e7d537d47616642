"""SIGTERM while a runaway request runs: ``derivd serve`` (every engine in process) ends within a
bound, however far the request's own deadline is, and exits 0 (a graceful stop for Kubernetes)."""

from __future__ import annotations

import os
import signal
import time

import psutil

from tests.chaos.serving import cpu_seconds, send_runaway, serve
from tests.support import free_port, wait_for

STOP_WITHIN_S = 10.0


def test_sigterm_during_a_runaway_request_ends_the_process_within_a_bound():
    port = free_port()
    env = {**os.environ, "DERIVD_REQUEST_TIMEOUT_S": "600", "DERIVD_LOG_LEVEL": "WARNING",
           "OMP_NUM_THREADS": "1"}
    proc = serve(port, env, ready_s=60)
    try:
        busy = [psutil.Process(proc.pid)]
        idle = cpu_seconds(busy)
        caller, answers = send_runaway(port, STOP_WITHIN_S + 30)
        # CPU time spent, not a share of a core: on a loaded machine the runaway may get a small one
        wait_for(lambda: cpu_seconds(busy) > idle + 1.0, "the runaway to be computing (1 s of CPU)", 60)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WITHIN_S)
        finally:
            stopped_after = time.monotonic() - sent
        assert proc.returncode == 0 and stopped_after < STOP_WITHIN_S
        caller.join(30)
        assert answers and answers[0] != 200  # the caller was answered (503) or its connection closed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
