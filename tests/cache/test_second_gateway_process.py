"""Two gateway processes on one Redis: the second reuses what the first compiled, counted in /metrics.

The second gateway is the real command line (``derivd serve``) in its own
process, so nothing is shared with the first but Redis.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import numpy as np

from tests.cache.conftest import HMAC_KEY, PROGRAM, analytic_gradient, shared_settings
from tests.conftest import LiveServer
from tests.support import free_port, wait_for


def start_gateway(url: str, prefix: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DERIVD_REDIS_URL": url, "DERIVD_TAPE_CACHE_HMAC_KEY": HMAC_KEY,
           "DERIVD_REDIS_KEY_PREFIX": prefix, "DERIVD_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--workers", "0", "--port", str(port),
                             "--grpc-port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200, "the second gateway to start",
                 30, ignoring=(httpx.HTTPError,))
    except AssertionError:
        proc.kill()
        raise
    return proc, base


def metric(text: str, name: str, level: str) -> float:
    m = re.search(rf'^{name}{{level="{level}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_second_gateway_process_reuses_tapes_and_ids(shared_redis_url, prefix):
    settings = shared_settings(shared_redis_url, prefix)
    x = [0.5, -0.7, 1.1]
    value, grad = analytic_gradient(np.array(x))
    body = {"function": {"dsl": PROGRAM}, "at": {"x": x}}
    with LiveServer(settings) as first:
        r = httpx.post(f"{first.url}/v1/gradient", json=body)
        assert r.status_code == 200, r.text
        fid = httpx.post(f"{first.url}/v1/functions", json={"dsl": "sum(a * x)", "constants": {"a": [1, 2, 3]}}
                         ).json()["id"]
    proc, second = start_gateway(shared_redis_url, prefix)
    try:
        r = httpx.post(f"{second}/v1/gradient", json=body)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["value"], value, rtol=1e-13)
        np.testing.assert_allclose(r.json()["gradient"]["x"], grad, rtol=1e-12)
        text = httpx.get(f"{second}/metrics").text
        assert metric(text, "derivd_tape_cache_hits_total", "redis") == 2  # the program and its gradient tape
        assert metric(text, "derivd_tape_cache_misses_total", "redis") == 0

        r = httpx.post(f"{second}/v1/gradient", json={"function": {"id": fid}, "at": {"x": x}})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["gradient"]["x"], [1.0, 2.0, 3.0], rtol=1e-15)
        assert httpx.get(f"{second}/v1/functions/{fid}").json()["inputs"] == ["a", "x"]
    finally:
        proc.terminate()
        proc.wait(10)
