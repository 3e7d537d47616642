"""The examples/ scripts run to completion against a live server and report convergence."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.clients.conftest import ROOT


def run_example(name, env, *args):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_gauss_newton(cli_env):
    out = run_example("gauss_newton.py", cli_env)
    assert out.strip().endswith("converged") and "NOT" not in out


def test_newton_cg(cli_env):
    out = run_example("newton_cg.py", cli_env, "--n", "6")
    assert "converged after" in out and "NOT" not in out


def test_blackbox_gradient_check(cli_env, loopback_server):
    out = run_example("blackbox_gradient_check.py", {**cli_env, "DERIVD_URL": loopback_server.url})
    assert "gradient check PASSED" in out


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_scipy_minimize(cli_env, server, transport):
    args = []
    if transport == "grpc":
        from derivd.config import Settings
        from derivd.grpc_api.server import GrpcServer

        g = GrpcServer(server.app.dispatcher, Settings(), port=0, host="127.0.0.1").start()
        args = ["--grpc", f"127.0.0.1:{g.port}"]
    try:
        out = run_example("scipy_minimize.py", cli_env, "--n", "8", *args)
    finally:
        if args:
            g.stop(grace=0.5)
    assert out.strip().endswith("both converged") and "NOT" not in out
