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
