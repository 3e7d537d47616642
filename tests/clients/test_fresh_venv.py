"""The SDK installs alone: a clean virtual environment with only clients/python imports it and
computes a gradient on the live server, and none of the server's dependencies came along.

Needs pip to reach PyPI (for httpx, numpy, rich), as CI and developers' machines do. Skipped only
when DERIVD_SKIP_VENV_TEST=1 says so explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.clients.conftest import SDK

SCRIPT = """
import importlib.util, json, sys
import derivd_client as dd
server_deps = [m for m in ("fastapi", "uvicorn", "pydantic", "derivd", "grpc") if importlib.util.find_spec(m)]
with dd.Client(sys.argv[1]) as c:
    r = c.gradient(lambda x: dd.sum(dd.sin(x) * x), x=[0.5, 1.0])
print(json.dumps({"server_deps": server_deps, "gradient": r.gradient["x"].tolist(), "file": dd.__file__}))
"""


@pytest.mark.skipif(os.environ.get("DERIVD_SKIP_VENV_TEST") == "1", reason="DERIVD_SKIP_VENV_TEST=1")
def test_clean_venv_with_only_the_sdk(tmp_path, server):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(SDK)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    proc = subprocess.run([str(python), "-c", SCRIPT, server.url], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["server_deps"] == []
    assert str(venv) in out["file"]  # the installed copy, not the source tree
    import numpy as np
    x = np.array([0.5, 1.0])
    np.testing.assert_allclose(out["gradient"], np.sin(x) + x * np.cos(x), rtol=1e-14)
    cli = subprocess.run([str(venv / "bin" / "derivd"), "gradient", "sum(x**2)", "--at", "x=1,2", "--json",
                          "--url", server.url], env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["gradient"]["x"] == [2.0, 4.0]
