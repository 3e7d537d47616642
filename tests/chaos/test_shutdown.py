"""SIGTERM while a runaway request runs: ``derivd serve`` (every engine in process) ends within a
bound, however far the request's own deadline is, and exits 0 (a graceful stop for Kubernetes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil

from tests.chaos.test_runaway import LOOPED
from tests.chaos.test_shutdown_tree import cpu_seconds
from tests.support import free_port, wait_for

STOP_WITHIN_S = 10.0


def test_sigterm_during_a_runaway_request_ends_the_process_within_a_bound():
    port = free_port()
    env = {**os.environ, "DERIVD_REQUEST_TIMEOUT_S": "600", "DERIVD_LOG_LEVEL": "WARNING",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--port", str(port), "--grpc-port", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, "derivd serve", 60,
                 ignoring=(httpx.HTTPError,))
        answers = []

        def runaway():
            try:
                answers.append(httpx.post(f"{base}/v1/evaluate", json={"function": {"dsl": LOOPED}, "at": {"x": 0.1}},
                                          timeout=STOP_WITHIN_S + 30).status_code)
            except httpx.HTTPError as e:
                answers.append(type(e).__name__)

        busy = [psutil.Process(proc.pid)]
        idle = cpu_seconds(busy)
        caller = threading.Thread(target=runaway)
        caller.start()
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
