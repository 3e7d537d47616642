"""What the shutdown runs share: a real ``derivd serve`` process, a runaway request sent to it from a
thread of its own, and CPU time counted over processes."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import psutil

from tests.chaos.test_runaway import LOOPED
from tests.support import wait_for


def serve(port: int, env: dict, *extra: str, ready_s: float) -> subprocess.Popen:
    """``derivd serve`` on ``port`` (no public gRPC) with ``extra`` arguments, once it answers /healthz."""
    proc = subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--port", str(port), "--grpc-port", "0",
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200,
                 "derivd serve", ready_s, ignoring=(httpx.HTTPError,))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def send_runaway(port: int, timeout_s: float) -> tuple[threading.Thread, list]:
    """A started thread posting the runaway loop program; its status code (or the name of the error
    that ended its connection) lands in the list."""
    answers: list = []

    def runaway():
        try:
            answers.append(httpx.post(f"http://127.0.0.1:{port}/v1/evaluate",
                                      json={"function": {"dsl": LOOPED}, "at": {"x": 0.1}},
                                      timeout=timeout_s).status_code)
        except httpx.HTTPError as e:
            answers.append(type(e).__name__)

    caller = threading.Thread(target=runaway)
    caller.start()
    return caller, answers


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User and system CPU time spent so far by the living ``procs``."""
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total
