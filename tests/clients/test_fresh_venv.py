"""Installs as a user makes them, each into a clean virtual environment: the SDK alone imports and
computes a gradient on the live server with none of the server's dependencies; and whichever of the
server and the SDK are installed (one, the other, both, in either order so that either package's
``derivd`` script is the one on disk), ``derivd --help`` lists exactly the installed verbs and
``derivd serve`` / ``derivd gradient`` run.

The packages are installed from copies of the tree (building in place would leave egg-info beside
the sources, which the other tests' import paths would then read as installed metadata). The server
goes in with ``--no-deps`` plus pydantic-settings, all its command line needs to parse, to stay
quick. Needs pip to reach PyPI (for httpx, numpy, rich, pydantic-settings), as CI and developers'
machines do. Skipped only when DERIVD_SKIP_VENV_TEST=1 says so explicitly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from derivd.cli import VERBS as SERVER_VERBS
from derivd_client.cli import VERBS as SDK_VERBS
from tests.clients.conftest import ROOT, SDK

pytestmark = pytest.mark.skipif(os.environ.get("DERIVD_SKIP_VENV_TEST") == "1", reason="DERIVD_SKIP_VENV_TEST=1")

SCRIPT = """
import importlib.util, json, sys
import derivd_client as dd
server_deps = [m for m in ("fastapi", "uvicorn", "pydantic", "derivd", "grpc") if importlib.util.find_spec(m)]
with dd.Client(sys.argv[1]) as c:
    r = c.gradient(lambda x: dd.sum(dd.sin(x) * x), x=[0.5, 1.0])
print(json.dumps({"server_deps": server_deps, "gradient": r.gradient["x"].tolist(), "file": dd.__file__}))
"""
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "DERIVD_URL")}
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """Copies of the server's and the SDK's trees to install from."""
    top = tmp_path_factory.mktemp("sources")
    server = top / "server"
    server.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, server / name)
    shutil.copytree(ROOT / "services", server / "services", ignore=IGNORE)
    sdk = shutil.copytree(SDK, top / "sdk", ignore=IGNORE)
    return server, sdk


class Venv:
    def __init__(self, path: Path):
        """Without a pip of its own (seconds saved per venv): this interpreter's pip installs into it."""
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
        self.path, self.bin = path, path / ("Scripts" if os.name == "nt" else "bin")

    def pip(self, *args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(self.bin / "python"), "install", "-q",
                               "--disable-pip-version-check", *args], env=ENV, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def install_server(self, tree: Path) -> None:
        """As the README's ``pip install -e .``, with only what its command line needs."""
        self.pip("--no-deps", "-e", str(tree))
        self.pip("pydantic-settings>=2.2")

    def run(self, *args: str, script: str = "derivd") -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / script), *args], env=ENV, capture_output=True, text=True,
                              timeout=120, cwd=self.path)

    def verbs(self) -> set[str]:
        """The verbs ``derivd --help`` lists, after checking it ran cleanly."""
        helped = self.run("--help")
        assert helped.returncode == 0 and not helped.stderr, helped.stderr
        return set(re.findall(r"^  (\S+)  ", helped.stdout, re.M))

    def winner(self) -> str:
        """Which package's dispatcher the ``derivd`` script on disk runs."""
        return re.search(r"^from (\S+)\.commands import main$", (self.bin / "derivd").read_text(), re.M)[1]


def assert_refused(proc: subprocess.CompletedProcess, verb: str) -> None:
    """A verb of a package that is not installed: a one-line usage error, no traceback."""
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and f"`{verb}` is not a verb of the installed packages" in proc.stderr


def assert_serve_help(venv: Venv) -> None:
    served = venv.run("serve", "--help")
    assert served.returncode == 0 and "--grpc-port" in served.stdout.split(), served.stderr


def assert_gradient(venv: Venv, url: str) -> None:
    assert "--at" in venv.run("gradient", "--help").stdout.split()
    cli = venv.run("gradient", "sum(x**2)", "--at", "x=1,2", "--json", "--url", url)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["gradient"]["x"] == [2.0, 4.0]  # 2x, exactly


def test_clean_venv_with_only_the_sdk(tmp_path, server, sources):
    venv = Venv(tmp_path / "venv")
    venv.pip(str(sources[1]))
    proc = subprocess.run([str(venv.bin / "python"), "-c", SCRIPT, server.url], env=ENV, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["server_deps"] == []
    assert str(venv.path) in out["file"]  # the installed copy, not the source tree
    x = np.array([0.5, 1.0])
    np.testing.assert_allclose(out["gradient"], np.sin(x) + x * np.cos(x), rtol=1e-14)

    assert venv.verbs() == set(SDK_VERBS)
    assert_gradient(venv, server.url)
    assert_refused(venv.run("serve"), "serve")
    own = venv.run("gradient", "--help", script="derivd-client")  # the SDK's own name, no dispatch
    assert own.returncode == 0 and "--at" in own.stdout.split(), own.stderr
    assert not (venv.bin / "derivd-server").exists()


def test_clean_venv_with_only_the_server(tmp_path, sources):
    venv = Venv(tmp_path / "venv")
    venv.install_server(sources[0])
    assert venv.verbs() == set(SERVER_VERBS)
    assert_serve_help(venv)
    assert "--listen" in venv.run("worker", "--help").stdout.split()
    assert venv.run("serve", "--help", script="derivd-server").stdout == venv.run("serve", "--help").stdout
    assert_refused(venv.run("gradient", "sum(x)", "--at", "x=1"), "gradient")
    assert not (venv.bin / "derivd-client").exists()


def test_both_packages_whichever_script_won(tmp_path, server, sources):
    venv = Venv(tmp_path / "venv")
    venv.pip(str(sources[1]))
    venv.install_server(sources[0])  # the server's script overwrites the SDK's
    assert venv.winner() == "derivd"
    listed = venv.run("--help").stdout
    assert venv.verbs() == set(SDK_VERBS) | set(SERVER_VERBS)
    assert_serve_help(venv)
    assert_gradient(venv, server.url)

    venv.pip("--no-deps", "--force-reinstall", str(sources[1]))  # and now the SDK's overwrites the server's
    assert venv.winner() == "derivd_client"
    assert venv.run("--help").stdout == listed
    assert_serve_help(venv)
    assert_gradient(venv, server.url)
