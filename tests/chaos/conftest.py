"""Chaos fixtures: real worker processes on loopback, small limits so every run is bounded."""

from __future__ import annotations

import pytest

from derivd.cache import CacheStats
from derivd.config import Settings
from derivd.dispatch.pools import GrpcPool
from derivd.workers.supervisor import Supervisor


@pytest.fixture(scope="module")
def worker_pool():
    """One local worker (a Supervisor, as `derivd serve --workers 1`) and a pool to it."""
    settings = Settings(worker_stop_grace_s=0.3, pool_wait_s=10.0)
    supervisor = Supervisor(settings, 1).start()
    pool = GrpcPool(supervisor.target, supervisor.settings, CacheStats())  # with the run's worker token
    yield supervisor, pool
    pool.close()
    supervisor.stop()
