"""A warm REST gradient (n = 10) in process: the gateway's whole ASGI app called directly.

    OMP_NUM_THREADS=1 python bench/rest_inprocess.py [--requests 1000] [--profile]

No socket, no uvicorn: what derivd itself spends per warm ``POST /v1/gradient``
(middleware, JSON in and out, validation, dispatch, the core, the engine,
metrics), as CPU time of this thread (best of 9 batches, so that the machine's
other work moves it little) and as Python function calls per request (counted by
cProfile, which moves not at all). ``--profile`` prints where the time goes.
``bench/service.py --rest-floor`` measures the same request served.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import time

import numpy as np
import orjson

from derivd.config import Settings
from derivd.gateway.app import create_app

ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"  # as bench/service.py


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per batch")
    parser.add_argument("--profile", action="store_true", help="print the top of cProfile's table")
    args = parser.parse_args()
    logging.getLogger("derivd.access").setLevel(logging.WARNING)  # as the served bench runs it
    body = orjson.dumps({"function": {"dsl": ROSENBROCK}, "at": {"x": np.linspace(-1.2, 1.2, 10).tolist()}})
    app = create_app(Settings())
    scope = {"type": "http", "method": "POST", "path": "/v1/gradient", "client": ("127.0.0.1", 1),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    sent: list = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    async def requests(n: int) -> None:
        for _ in range(n):
            sent.clear()
            await app(dict(scope), receive, send)

    async def run() -> dict:
        await requests(500)  # compiled, seen quick, tier 2 tried
        assert sent[0]["status"] == 200, sent
        best = float("inf")
        for _ in range(9):
            t0 = time.thread_time()
            await requests(args.requests)
            best = min(best, (time.thread_time() - t0) / args.requests)
        profile = cProfile.Profile()
        profile.enable()
        await requests(args.requests)
        profile.disable()
        stats = pstats.Stats(profile)
        calls = sum(s[1] for s in stats.stats.values()) / args.requests
        if args.profile:
            stats.sort_stats("tottime").print_stats(30)
        return {"cpu_us_per_request": round(best * 1e6, 1), "python_calls_per_request": round(calls, 1)}

    print(json.dumps(asyncio.run(run()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
