"""Black-box finite differences against latency (issue 5): a 20-input central-difference
gradient of a black box answering in 50 ms, 20 calls in flight.

Run: ``python bench/blackbox_latency.py``. The ideal is ceil(41 / 20) = 3 waves of 50 ms;
the figure is the best of several gradients' wall time over that ideal. It uses the test
suite's black-box server (an asyncio HTTP/1.1 server in this process, on 127.0.0.1).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from derivd.blackbox import BlackBoxCaller, BlackBoxSpec  # noqa: E402
from derivd.config import Settings  # noqa: E402
from derivd.engines import finite  # noqa: E402
from tests.support import BlackBoxServer  # noqa: E402


def main() -> int:
    server = BlackBoxServer()
    settings = Settings(blackbox_allow=["127.0.0.1/32"], blackbox_deny=[])
    try:
        print("| n | concurrency | evaluations | ideal (ms) | best wall time (ms) | ratio |")
        print("|---|---|---|---|---|---|")
        for n, concurrency in ((20, 20), (20, 41), (50, 25)):
            spec = BlackBoxSpec(name=f"slow{n}_{concurrency}", url=server.url("/slow50"), input_size=n,
                                output_size=2, max_concurrency=concurrency)
            caller = BlackBoxCaller(spec, settings)
            caller.evaluate(np.zeros((concurrency, n)) + np.arange(concurrency)[:, None])  # warm the pool
            times, evaluations = [], 0
            for seed in range(5):
                x = np.random.default_rng(seed).uniform(-1, 1, n)
                start = time.perf_counter()
                r = finite.gradient(lambda X: caller.evaluate(X)[:, :1], x, finite.FDOptions(step=1e-6),
                                    budget=10_000)
                times.append(time.perf_counter() - start)
                evaluations = r.evaluations
            ideal = math.ceil(evaluations / concurrency) * 0.05
            print(f"| {n} | {concurrency} | {evaluations} | {ideal * 1e3:.0f} | {min(times) * 1e3:.0f} | "
                  f"{min(times) / ideal:.2f} |")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
