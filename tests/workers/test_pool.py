"""Requests through real worker processes: the same numbers and errors as in process, tapes shared
through Redis between workers, a killed worker costs no request, a runaway stops at its deadline (the watchdog recycles a worker
that cannot)."""

from __future__ import annotations

import os
import re
import signal
import threading
import uuid

import httpx
import numpy as np
import pytest

from derivd import clock
from derivd.cache import CacheStats
from derivd.core import Request
from derivd.errors import DerivdError
from derivd.dispatch.pools import GrpcPool
from derivd.workers.server import EXIT_OVERRUN, Watchdog, build_server
from tests.conftest import LiveServer
from tests.support import wait_for

X = [0.4, -1.3, 0.9]


def post(client, endpoint, body):
    r = client.post(f"/v1/{endpoint}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_endpoint_answers_through_workers_with_analytic_numbers(pooled):
    x = np.array(X)
    f = "[x[0] * sin(x[1]), exp(x[2]) + x[0] ** 2]"
    jac = np.array([[np.sin(x[1]), x[0] * np.cos(x[1]), 0.0], [2 * x[0], 0.0, np.exp(x[2])]])
    value = [x[0] * np.sin(x[1]), np.exp(x[2]) + x[0] ** 2]
    for mode, engine in (("forward", "forward"), ("reverse", "reverse")):
        r = post(pooled, "jacobian", {"function": {"dsl": f}, "at": {"x": X}, "mode": mode})
        np.testing.assert_allclose(r["jacobian"], jac, rtol=1e-14)
        np.testing.assert_allclose(r["value"], value, rtol=1e-14)
        assert r["shape"] == [2, 3] and r["engine"] == engine
    r = post(pooled, "jvp", {"function": {"dsl": f}, "at": {"x": X}, "v": {"x": [1.0, 2.0, -1.0]}})
    np.testing.assert_allclose(r["jvp"], jac @ [1.0, 2.0, -1.0], rtol=1e-14)
    r = post(pooled, "vjp", {"function": {"dsl": f}, "at": {"x": X}, "u": [0.5, -2.0]})
    np.testing.assert_allclose(r["vjp"]["x"], np.array([0.5, -2.0]) @ jac, rtol=1e-14)
    r = post(pooled, "evaluate", {"function": {"dsl": f}, "at": {"x": X}, "encoding": "base64"})
    assert r["value"]["dtype"] == "float64" and r["value"]["shape"] == [2]

    # constants, an integer gather, and a stored id resolved by the gateway
    body = {"dsl": "sum(w * x[idx] ** 2)", "constants": {"w": [1.0, 10.0], "idx": [2, 0]}}
    fid = pooled.post("/v1/functions", json=body).json()["id"]
    r = post(pooled, "gradient", {"function": {"id": fid}, "at": {"x": X}})
    np.testing.assert_allclose(r["gradient"]["x"], [20 * x[0], 0.0, 2 * x[2]], rtol=1e-14)
    np.testing.assert_allclose(r["value"], x[2] ** 2 + 10 * x[0] ** 2, rtol=1e-14)


@pytest.mark.parametrize("body", [
    {"function": {"dsl": "sum(x ** 2"}, "at": {"x": [1.0]}},
    {"function": {"dsl": "sum(x * y)"}, "at": {"x": [1.0]}},
    {"function": {"dsl": "x + y"}, "at": {"x": [1.0, 2.0], "y": [1.0, 2.0, 3.0]}},
    {"function": {"dsl": "sum(zeros((100000, 100000)))"}, "at": {"x": [1.0]}},
    {"function": {"dsl": "x[5]"}, "at": {"x": [1.0, 2.0]}},
    {"function": {"dsl": "sum(x)"}, "at": {"x": [1.0]}, "wrt": ["z"]},
    {"function": {"id": "f" * 32}, "at": {"x": [1.0]}},
])
def test_errors_cross_the_pool_unchanged(pooled, client, body):
    through_workers = pooled.post("/v1/gradient", json=body)
    in_process = client.post("/v1/gradient", json=body)
    assert 400 <= through_workers.status_code < 500
    assert (through_workers.status_code, through_workers.json()) == (in_process.status_code, in_process.json())


def test_each_worker_reuses_what_the_other_compiled(supervisor, worker_settings):
    """A pool per worker, so which worker runs what is known: the second worker's lookups hit Redis."""
    c = float(uuid.uuid4().int % 1000 + 1)
    source = f"sum(sinh(x) * {c!r})"  # new to every worker and to Redis
    pools = [GrpcPool(f"127.0.0.1:{slot.port}", worker_settings, CacheStats()) for slot in supervisor.slots]
    try:
        for pool, expected in zip(pools, [(0, 2), (2, 0)]):
            response, timings = pool.run("gradient", Request(function={"dsl": source}, at={"x": np.array(X)}),
                                         "reverse")
            np.testing.assert_allclose(response["gradient"]["x"], c * np.cosh(X), rtol=1e-14)
            assert (pool.stats.totals["redis", "hit"], pool.stats.totals["redis", "miss"]) == expected
            assert timings.compile > 0
    finally:
        for pool in pools:
            pool.close()


def test_a_worker_killed_under_load_loses_no_request(pooled, supervisor):
    before, victim = supervisor.restarts, supervisor.pids[0]
    results, errors = [], []
    done = threading.Event()

    def client_loop(k):
        with httpx.Client(base_url=str(pooled.base_url), timeout=60) as c:
            for i in range(30):
                x = [0.1 * k, 0.01 * i, -0.5]
                r = c.post("/v1/gradient", json={"function": {"dsl": "sum(cos(x) * x[0])"}, "at": {"x": x}})
                (results if r.status_code == 200 else errors).append((x, r))
                if len(results) == 40:
                    done.set()

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    done.wait(60)
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(120)
    assert errors == [], errors[0][1].text
    assert len(results) == 180
    for x, r in results:
        x = np.array(x)
        want = -np.sin(x) * x[0]
        want[0] += np.sum(np.cos(x))
        np.testing.assert_allclose(r.json()["gradient"]["x"], want, rtol=1e-13, atol=1e-15)

    wait_for(lambda: supervisor.restarts == before + 1, "the killed worker to be replaced")
    assert supervisor.exit_codes[-1] == -signal.SIGKILL
    # counted when the death is seen; the replacement starts then, or after a backoff if it died young
    wait_for(lambda: victim not in supervisor.pids, "the replacement to take the killed worker's slot")
    wait_for(lambda: pooled.get("/readyz").status_code == 200, "the pool to be ready again")
    text = pooled.get("/metrics").text
    assert re.search(r'^derivd_worker_restarts_total\{pool="local"\} [1-9]', text, re.M)


def test_a_runaway_through_workers_is_refused_or_stopped_and_the_worker_kept(supervisor, worker_settings, pooled):
    """Through REST and the workers: a loop node of 50 000 products of 2000x2000 matrices (8e14 flops,
    hours here) is refused before it runs (413, the estimate over max_program_flops); one of 300x300
    matrices (2.7e12, minutes) runs until the gateway's 0.5 s deadline, answers 504, and the worker
    stops it there itself: no recycling, and the next request is answered."""
    before = supervisor.restarts
    hours = "A = ones((2000, 2000)) * x[0]\nfor i in range(50000):\n    A = A @ A * 0.0005\nsum(A)"
    minutes = hours.replace("2000, 2000", "300, 300")
    with LiveServer(worker_settings.model_copy(update={"pool_default": supervisor.target,
                                                        "request_timeout_s": 0.5})) as impatient:
        r = httpx.post(f"{impatient.url}/v1/evaluate", json={"function": {"dsl": hours}, "at": {"x": X}})
        assert r.status_code == 413
        assert r.json()["error"]["detail"]["limit"] == "max_program_flops"
        r = httpx.post(f"{impatient.url}/v1/evaluate", json={"function": {"dsl": minutes}, "at": {"x": X}})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"
    r = post(pooled, "gradient", {"function": {"dsl": "sum(x ** 3)"}, "at": {"x": X}})
    np.testing.assert_allclose(r["gradient"]["x"], 3 * np.array(X) ** 2, rtol=1e-15)
    assert supervisor.restarts == before


def test_the_watchdog_goes_by_the_clock(monkeypatch):
    """A request an hour from its deadline: once the clock says the deadline and the grace have
    passed (no waiting), the watchdog exits with EXIT_OVERRUN (here recorded, not done)."""
    exits = []
    watchdog = Watchdog(grace_s=0.3, exit=exits.append)
    deadline = clock.now() + 3600
    with watchdog.watch(deadline, "evaluate r1"):
        later = deadline + 0.31
        monkeypatch.setattr(clock, "now", lambda: later)
        wait_for(lambda: exits, "the watchdog to act on the clock")
    assert exits[0] == EXIT_OVERRUN


def test_a_worker_refuses_families_it_was_not_started_for(worker_settings):
    server, port = build_server(worker_settings, "127.0.0.1:0", {"forward"})
    pool = GrpcPool(f"127.0.0.1:{port}", worker_settings, CacheStats())
    try:
        req = Request(function={"dsl": "sum(x ** 2)"}, at={"x": np.array(X)})
        response, _ = pool.run("jacobian", req, "forward")
        np.testing.assert_allclose(response["jacobian"], [2 * np.array(X)], rtol=1e-15)
        with pytest.raises(DerivdError) as e:
            pool.run("gradient", req, "reverse")
        assert (e.value.status, e.value.code, e.value.detail["family"]) == (503, "misrouted", "reverse")
    finally:
        pool.close()
        server.stop(0)


def test_a_pool_with_no_worker_answers_503(worker_settings):
    from tests.support import free_port

    settings = worker_settings.model_copy(update={"pool_wait_s": 0.3})
    pool = GrpcPool(f"127.0.0.1:{free_port()}", settings, CacheStats())
    try:
        with pytest.raises(DerivdError) as e:
            pool.run("gradient", Request(function={"dsl": "sum(x)"}, at={"x": np.array(X)}), "reverse")
        assert (e.value.status, e.value.code) == (503, "pool_unavailable")
        assert not pool.ready()
    finally:
        pool.close()
