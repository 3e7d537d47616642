"""``derivd serve --gateways N``: N REST processes on one port, as a user starts them (the command
line, real sockets, a real Redis). What they must agree on they share, /metrics sums them, and a
killed one is replaced while the others keep answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.references import ROSENBROCK, rosenbrock_gradient
from tests.support import free_port, wait_for

X = np.array([0.3, -0.8, 1.4, 2.0])


def gateway_children(pid: int) -> set[int]:
    """The spawned gateway processes of the parent ``pid`` (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = [int(k) for k in f.read().split()]
    out = set()
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    out.add(kid)
        except FileNotFoundError:
            pass
    return out


def requests_total(text: str, route: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "derivd_requests_total" and s.labels.get("route") == route)


def fresh(base: str, method: str, path: str, **kw) -> httpx.Response:
    """One request on its own connection: the kernel hands each connection to either process."""
    with httpx.Client(base_url=base, timeout=30) as c:
        return c.request(method, path, **kw)


@pytest.fixture
def gateways(shared_redis_url):
    port = free_port()
    env = {**os.environ, "DERIVD_REDIS_URL": shared_redis_url, "DERIVD_TAPE_CACHE_HMAC_KEY": "tests-only",
           "DERIVD_REDIS_KEY_PREFIX": f"derivd-test-{uuid.uuid4().hex[:12]}", "DERIVD_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--gateways", "2", "--workers", "0",
                             "--grpc-port", "0", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(gateway_children(proc.pid)) == 2, "two gateway processes", 60)
        wait_for(lambda: _healthy(base), "the gateways to answer", 60)
        yield proc, base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def _healthy(base: str) -> bool:
    try:
        return fresh(base, "GET", "/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_several_gateways_need_redis():
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DERIVD_REDIS_URL")}
    r = subprocess.run([sys.executable, "-m", "derivd.cli", "serve", "--gateways", "2", "--port", str(free_port())],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "REDIS_URL" in r.stderr


def process_of(response: httpx.Response) -> str:
    """Which gateway process answered: a made-up request id starts with a random prefix per process
    (observability.request_id)."""
    return response.headers["x-request-id"][:16]


def test_gateways_share_functions_and_sum_their_metrics(gateways):
    proc, base = gateways
    r = fresh(base, "POST", "/v1/functions", json={"dsl": ROSENBROCK})
    assert r.status_code == 200, r.text
    fid = r.json()["id"]
    answered: list[str] = []  # the process of each gradient

    def gradient_by_id() -> bool:
        """One gradient of the stored id on a fresh connection (the kernel hands it to either process)."""
        r = fresh(base, "POST", "/v1/gradient", json={"function": {"id": fid}, "at": {"x": X.tolist()}})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["gradient"]["x"], rosenbrock_gradient(X), rtol=1e-13)
        answered.append(process_of(r))
        return len(set(answered)) == 2

    for _ in range(19):
        gradient_by_id()
    wait_for(gradient_by_id, "both gateway processes to answer a gradient of the stored id", 60)
    scraped: set[str] = set()

    def scrape_sums_both() -> bool:
        r = fresh(base, "GET", "/metrics")
        assert requests_total(r.text, "/v1/gradient") == len(answered)  # the sum over both, whoever answers
        scraped.add(process_of(r))
        return scraped == set(answered)

    wait_for(scrape_sums_both, "a scrape answered by each gateway process", 60)


def test_a_killed_gateway_is_replaced_and_the_other_keeps_answering(gateways):
    proc, base = gateways
    before = gateway_children(proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    answered = 0

    def replaced_while_answering() -> bool:
        nonlocal answered
        try:
            r = fresh(base, "POST", "/v1/gradient", json={"function": {"dsl": ROSENBROCK}, "at": {"x": X.tolist()}})
        except httpx.HTTPError:  # a connection the dead process had accepted: the client tries again
            return False
        assert r.status_code == 200, r.text
        answered += 1
        now = gateway_children(proc.pid)
        return victim not in now and len(now) == 2 and answered >= 10

    wait_for(replaced_while_answering, "the killed gateway to be replaced while the other answers", 60)
    now = gateway_children(proc.pid)
    assert victim not in now and len(now) == 2, (before, now)
    metrics = wait_for(lambda: _settled(base), "the dead process's in-flight count to be dropped", 20)
    assert requests_total(metrics, "/v1/gradient") >= answered


def _settled(base: str) -> str | None:
    text = fresh(base, "GET", "/metrics").text
    in_flight = [s.value for family in text_string_to_metric_families(text) for s in family.samples
                 if s.name == "derivd_requests_in_flight" and s.labels.get("transport") == "rest"]
    return text if in_flight == [0.0] else None
