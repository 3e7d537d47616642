"""Real worker processes (two, spawned by a Supervisor) behind a real gateway, sharing a real Redis."""

from __future__ import annotations

import uuid

import httpx
import pytest

from derivd.workers.supervisor import Supervisor
from tests.cache.conftest import shared_settings
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def worker_settings(shared_redis_url):
    return shared_settings(shared_redis_url, f"derivd-test-{uuid.uuid4().hex[:12]}", worker_stop_grace_s=0.3,
                           pool_wait_s=10.0, worker_token=f"tests-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def supervisor(worker_settings):
    sup = Supervisor(worker_settings, 2).start()
    yield sup
    sup.stop()


@pytest.fixture(scope="module")
def gateway(supervisor, worker_settings):
    """The gateway routing every family to the two workers, restarts counted as `derivd serve` does."""
    with LiveServer(worker_settings.model_copy(update={"pool_default": supervisor.target})) as server:
        metrics = server.app.service.metrics
        supervisor.on_restart = lambda slot: metrics.worker_restarts.labels("local").inc()
        yield server


@pytest.fixture(scope="module")
def pooled(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c
