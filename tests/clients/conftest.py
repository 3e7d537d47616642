"""Fixtures for the SDK's tests: live servers, subprocess env (the SDK is imported from its source tree,
tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SDK

import derivd_client as dd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sdk(server):
    with dd.Client(server.url, timeout=60, retries=1) as c:
        yield c


@pytest.fixture(scope="module")
def grpc_target(server):
    """The public gRPC API beside the session's REST server, on a free port: its address."""
    server_grpc = pytest.importorskip("derivd.grpc_api.server")
    from derivd.config import Settings

    g = server_grpc.GrpcServer(server.app.dispatcher, Settings(), port=0, host="127.0.0.1").start()
    try:
        yield f"127.0.0.1:{g.port}"
    finally:
        g.stop(grace=0.5)


@pytest.fixture(scope="module")
def rpc(grpc_target):
    """A blocking gRPC client of ``grpc_target``."""
    from derivd_client.grpc_client import GrpcClient

    with GrpcClient(grpc_target, timeout=60, retries=1) as c:
        yield c


@pytest.fixture(scope="session")
def cli_env(server):
    """Environment for `python -m derivd_client.cli ...` subprocesses pointed at the live server."""
    env = dict(os.environ)
    paths = [str(SDK), str(ROOT / "services"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["DERIVD_URL"] = server.url
    env.pop("DERIVD_API_KEY", None)
    return env


@pytest.fixture(scope="session")
def loopback_server():
    """A derivd that may call black boxes on 127.0.0.1 (the default allow-list refuses loopback)."""
    from derivd.config import Settings

    from tests.conftest import LiveServer

    with LiveServer(Settings(blackbox_allow=["127.0.0.0/8"], blackbox_deny=[])) as s:
        yield s
