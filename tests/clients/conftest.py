"""Fixtures for the SDK's tests: the SDK imported from its source tree, live servers, subprocess env.

The SDK is a separate package (clients/python); the suite imports it from the
source tree rather than requiring a second install, so the README's one-line
test command keeps working. Subprocesses get the same path via PYTHONPATH.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def cli_env(server):
    """Environment for `python -m derivd_client.cli ...` subprocesses pointed at the live server."""
    env = dict(os.environ)
    paths = [str(SDK), str(ROOT / "services"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["DERIVD_URL"] = server.url
    env.pop("DERIVD_API_KEY", None)
    return env


class BlackBoxServer:
    """A real HTTP black box on 127.0.0.1: POST {"x": [...]} -> {"y": f(x)} (and batched {"xs"} -> {"ys"})."""

    def __init__(self, f):
        self.f = f
        self.calls = 0
        box = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                box.calls += 1
                if "xs" in body:
                    out = {"ys": [np.atleast_1d(box.f(np.asarray(x))).tolist() for x in body["xs"]]}
                else:
                    out = {"y": np.atleast_1d(box.f(np.asarray(body["x"]))).tolist()}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def loopback_server():
    """A derivd that may call black boxes on 127.0.0.1 (the default allow-list refuses loopback)."""
    from derivd.config import Settings

    from tests.conftest import LiveServer

    with LiveServer(Settings(blackbox_allow=["127.0.0.0/8"], blackbox_deny=[])) as s:
        yield s
