"""Shared fixtures: the suite's HTTP black box (tests/support.py) on 127.0.0.1, settings that
admit it, and a real Redis for the registry."""

import pytest

from derivd.config import Settings
from tests.support import BlackBoxServer, free_port


@pytest.fixture(scope="session")
def _server_session():
    server = BlackBoxServer()
    yield server
    server.close()


@pytest.fixture
def server(_server_session) -> BlackBoxServer:
    """The running black box, its records cleared for this test."""
    _server_session.reset()
    return _server_session


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    return free_port()


@pytest.fixture
def local_settings() -> Settings:
    """Settings admitting only 127.0.0.1, with quick retries for tests."""
    return Settings(
        blackbox_allow=["127.0.0.1/32"],
        blackbox_deny=[],
        blackbox_retries=3,
        blackbox_backoff_s=0.01,
        blackbox_max_response_bytes=64 * 1024,
    )


@pytest.fixture(scope="session")
def redis_url(shared_redis_url):
    """A real Redis: $REDIS_URL if set, else the suite's own redis-server (tests/conftest.py)."""
    return shared_redis_url
