"""Fixtures for the SDK's tests: the SDK imported from its source tree, live servers, subprocess env.

The SDK is a separate package (clients/python); the suite imports it from the
source tree rather than requiring a second install, so the README's one-line
test command keeps working. Subprocesses get the same path via PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "python"
if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

import derivd_client as dd  # noqa: E402


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
