"""gRPC's port is one server's: a second server on it fails loudly instead of sharing it by
SO_REUSEPORT (which sent each request to either server at random)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from derivd.config import Settings
from derivd.core import Service
from derivd.dispatch import Dispatcher
from derivd.grpc_api.server import GrpcServer
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_server_on_a_taken_port_is_an_error_naming_it(stack):
    dispatcher = Dispatcher(Service(Settings(host="127.0.0.1")))
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{stack.grpc.port}.*taken"):
            GrpcServer(dispatcher, stack.settings, stack.grpc.port, host="127.0.0.1")
    finally:
        dispatcher.close()


def test_two_serves_with_one_grpc_port_the_second_exits_1_with_one_line():
    grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERIVD_")}
    env.update(PYTHONPATH=str(ROOT / "services"), DERIVD_LOG_FORMAT="json")

    def serve(port):
        return subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--grpc-port", str(grpc_port), "--workers", "0"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = serve(free_port())
    try:
        for line in first.stderr:  # JSON logs: the record saying it listens, with both addresses
            if '"listening"' in line:
                assert f"127.0.0.1:{grpc_port}" in line
                break
        else:
            pytest.fail(f"the first server did not start: {first.wait()}")
        second = serve(free_port())
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert f"derivd: gRPC cannot listen on 127.0.0.1:{grpc_port}" in err
        assert "Traceback" not in err
        assert first.poll() is None  # the first one goes on serving
    finally:
        first.terminate()
        first.wait(timeout=30)
