"""``derivd serve`` in a real terminal (a pty): the banner, access lines for people, a quiet Ctrl+C;
and JSON logs wherever the output is not a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import httpx

from derivd.observability import TextFormatter, configure_logging
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal:
    """A command on a pseudo-terminal; ``read`` collects what it printed so far."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command, its stdout and stderr the terminal
            os.execvpe(argv[0], argv, env)
        self.out = b""

    def read(self) -> str:
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the command ended
                break
            if not chunk:
                break
            self.out += chunk
        return ANSI.sub("", self.out.decode(errors="replace")).replace("\r\n", "\n")

    def wait(self, timeout_s: float = 20) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.read()
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.read()
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running after {timeout_s} s:\n{self.read()}")


def test_serve_on_a_terminal_shows_a_banner_readable_access_lines_and_stops_quietly():
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERIVD_")}
    env["PYTHONPATH"] = f"{ROOT / 'services'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    term = Terminal([sys.executable, "-m", "derivd.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--grpc-port", str(grpc_port), "--workers", "0"], env)
    try:
        wait_for(lambda: "Ctrl+C" in term.read(), "the banner", timeout_s=30)
        shown = term.read()
        base = f"http://127.0.0.1:{port}"
        for line in (f"REST        {base}/v1/", f"docs        {base}/docs", f"playground  {base}/playground",
                     f"gRPC        127.0.0.1:{grpc_port}"):
            assert line in shown, shown
        curl = next(line for line in shown.splitlines() if "curl" in line).split("try", 1)[1].strip()
        body = json.loads(curl.split("-d '", 1)[1].rstrip("'"))  # the banner's curl, sent as it says
        ok = httpx.post(f"{base}/v1/gradient", json=body)
        assert ok.status_code == 200 and ok.json()["gradient"]["x"] == [2.0, 4.0]
        bad = httpx.post(f"{base}/v1/gradient", json={"function": {"dsl": "sum(x**"}, "at": {"x": [1.0]}})
        assert bad.status_code == 400
        lines = wait_for(lambda: [ln for ln in term.read().splitlines() if "POST /v1/gradient" in ln][:2]
                         if term.read().count("POST /v1/gradient") >= 2 else None, "two access lines")
        assert re.search(r"POST /v1/gradient 200 reverse \d+\.\d ms \[" + ok.headers["x-request-id"], lines[0])
        assert re.search(r"POST /v1/gradient 400 parse_error \d+\.\d ms \[" + bad.headers["x-request-id"], lines[1])
        assert "{" not in lines[0] + lines[1]  # lines for people, not JSON
    finally:
        os.kill(term.pid, signal.SIGINT)  # Ctrl+C
        status = term.wait()
    out = term.read()
    assert status == 130, out
    assert "Traceback" not in out and out.rstrip().endswith("derivd: stopped"), out


def test_logs_are_json_off_a_terminal_and_text_when_asked():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        pipe = io.StringIO()  # not a terminal
        configure_logging("auto", "INFO", stream=pipe)
        logging.getLogger("derivd.access").info("request", extra={"fields": {
            "method": "POST", "path": "/v1/hessian", "status": 422, "error": "invalid_request", "ms": 1.25}})
        record = json.loads(pipe.getvalue())
        assert (record["status"], record["error"], record["path"]) == (422, "invalid_request", "/v1/hessian")
        pipe = io.StringIO()
        configure_logging("text", "INFO", stream=pipe)
        assert isinstance(root.handlers[0].formatter, TextFormatter)
        logging.getLogger("derivd.access").info("request", extra={"fields": {
            "method": "POST", "path": "/v1/hessian", "status": 422, "error": "invalid_request", "ms": 1.25,
            "request_id": "r1"}})
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO +POST /v1/hessian 422 invalid_request 1\.2 ms \[r1\]\n",
                            pipe.getvalue())
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_an_access_record_of_a_refusal_names_its_error_code(client, caplog):
    with caplog.at_level(logging.INFO, logger="derivd.access"):
        r = client.post("/v1/hvp", json={"function": {"dsl": "sum(x)"}, "at": {"x": [1.0]}, "v": {"y": [1.0]}})
        ok = client.post("/v1/gradient", json={"function": {"dsl": "sum(x)"}, "at": {"x": [1.0]}})
        wait_for(lambda: len([r for r in caplog.records if r.name == "derivd.access"]) >= 2, "two access records")
    fields = {rec.fields["request_id"]: rec.fields for rec in caplog.records if rec.name == "derivd.access"}
    refused = fields[r.headers["x-request-id"]]
    assert refused["status"] == r.status_code >= 400 and refused["error"] == r.json()["error"]["code"]
    assert fields[ok.headers["x-request-id"]]["error"] is None
