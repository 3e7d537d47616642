"""What the tape cache and the worker pools cost and save.

    OMP_NUM_THREADS=1 python bench/pools.py [--redis-url redis://127.0.0.1:6379/0] [--json out.json]

Starts its own redis-server on a free port unless --redis-url is given (keys go
under a fresh prefix either way). Measured without HTTP (``Service.compute``, and
the dispatcher's router for the worker):

* a new function's first request three ways: cold (lower, transform, generate
  code), its graphs from Redis (a second service: verify, rebuild, generate code),
  and a local hit; for a small gradient (Rosenbrock, n = 10) and a medium
  Jacobian (an unrolled 20-step recurrence, n = m = 50);
* the warm latency of one request in process and through one local worker
  process (internal gRPC on loopback: encode, send, decode), p50 and p99.

Numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
import uuid

import numpy as np

from derivd.config import Settings
from derivd.core import ENDPOINTS, Request, Service
from derivd.dispatch import Dispatcher
from derivd.workers.supervisor import Supervisor

ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"
RECURRENCE = "y = x\nfor i in range(20):\n    y = tanh(A @ y) + 0.1 * x\ny"


def cases(tag: str):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 50)) / 7
    return [
        ("gradient n=10", "gradient", f"{ROSENBROCK} + 0 * {tag}", {"x": rng.normal(size=10)}, {}),
        ("jacobian 50x50", "jacobian", f"{RECURRENCE} + 0 * {tag}", {"x": rng.normal(size=50)}, {"A": a}),
    ]


def timed(run, name, source, at, constants) -> float:
    """Seconds of ``run(name, request)``: ``Service.compute``, or a router's ``run`` (through its pool)."""
    t0 = time.perf_counter()
    run(name, Request(function={"dsl": source}, at=at, constants=constants))
    return time.perf_counter() - t0


def first_requests(settings, repeats: int) -> dict:
    out = {}
    for _ in range(repeats):
        tag = f"{uuid.uuid4().int % 10**6}.0"  # a program text no process has seen
        first, second = Service(settings), Service(settings)
        for service in (first, second):  # long-running processes: their Redis connections are open
            service.cache.redis.client.ping()
        for name, endpoint, source, at, constants in cases(tag):
            row = out.setdefault(name, {"cold": [], "redis": [], "local": []})
            row["cold"].append(timed(first.compute, endpoint, source, at, constants))
            row["redis"].append(timed(second.compute, endpoint, source, at, constants))
            row["local"].append(timed(second.compute, endpoint, source, at, constants))
    return {name: {k: statistics.median(v) * 1e3 for k, v in row.items()} for name, row in out.items()}


def warm_latency(run, n: int) -> dict:
    out = {}
    for name, endpoint, source, at, constants in cases("1.0"):
        for _ in range(20):
            timed(run, endpoint, source, at, constants)
        samples = sorted(timed(run, endpoint, source, at, constants) for _ in range(n))
        out[name] = {"p50_ms": samples[n // 2] * 1e3, "p99_ms": samples[int(n * 0.99)] * 1e3}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--json")
    args = parser.parse_args()
    proc = None
    url = args.redis_url
    if url is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", "", "--appendonly",
                                 "no"], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.3)
    settings = Settings(redis_url=url, tape_cache_hmac_key="bench", redis_key_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        result = {"warm_in_process": warm_latency(Service(Settings()).compute, args.requests)}
        supervisor = Supervisor(settings, 1).start()
        try:
            router = Dispatcher(Service(settings.model_copy(update={"pool_default": supervisor.target}))).router
            result["warm_one_local_worker"] = warm_latency(lambda name, req: router.run(ENDPOINTS[name], req),
                                                           args.requests)
        finally:
            supervisor.stop()
        result["first_request_ms"] = first_requests(settings, args.repeats)  # last: it leaves garbage
    finally:
        if proc is not None:
            proc.terminate()
    result["threads"] = os.environ.get("OMP_NUM_THREADS", "unset")
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
