"""Worker processes' compile-tier counts reach the gateway's /metrics, as their cache counts do: two
real workers with tier 2 forced on, behind a real gateway that runs nothing itself."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

pytest.importorskip("jax")

from derivd.config import Settings  # noqa: E402
from derivd.workers.supervisor import Supervisor  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402


def accepted(text: str) -> float:
    """The count of accepted tapes (0 before the first: a label shows once counted)."""
    found = re.search(r'^derivd_tier2_tapes_total\{result="accepted"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_tapes_promoted_in_workers_are_counted_in_the_gateways_metrics():
    # a worker's first compile starts its compile process (jax imported there): on a loaded machine past the
    # default xla_always_wait_s, after which tier 1 answers; what is tested here is the counting
    settings = Settings(xla_tier="always", xla_cache_dir="", xla_always_wait_s=120.0, worker_stop_grace_s=0.3,
                        pool_wait_s=10.0)
    sup = Supervisor(settings, 2).start()
    try:
        with LiveServer(sup.settings.model_copy(update={"pool_default": sup.target})) as gateway, \
                httpx.Client(base_url=gateway.url, timeout=60) as client:
            before = accepted(client.get("/metrics").text)
            x = np.array([0.3, -1.1, 2.0])
            for k in range(3):  # three programs: three tapes, each compiled and checked in a worker
                r = client.post("/v1/gradient", json={"function": {"dsl": f"sum(cos(x) * x ** {k + 1})"},
                                                      "at": {"x": x.tolist()}})
                assert r.status_code == 200, r.text
                assert r.json()["tier"] == 2 and 'tier;desc="xla"' in r.headers["server-timing"]
                want = -np.sin(x) * x ** (k + 1) + np.cos(x) * (k + 1) * x ** k
                np.testing.assert_allclose(r.json()["gradient"]["x"], want, rtol=1e-13)
            assert accepted(client.get("/metrics").text) - before >= 3
    finally:
        sup.stop()
