"""Failures surface as the typed exception carrying the server's code, message, detail and status;
connection failures are retried, answers (4xx or 5xx) and timeouts are not."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.conftest import LiveServer
from tests.support import free_port


@pytest.mark.parametrize("dsl, at, cls, code, status", [
    ("x +* 2", {"x": 1.0}, dd.ParseError, "parse_error", 400),
    ("sum(x) + y", {"x": [1.0, 2.0]}, dd.UnknownName, "unknown_name", 400),
    ("x + y", {"x": [1.0, 2.0], "y": [1.0, 2.0, 3.0]}, dd.ShapeError, "shape_mismatch", 400),
    ("x[5]", {"x": [1.0, 2.0]}, dd.errors.IndexOutOfRange, "index_out_of_range", 400),
])
def test_caller_errors_are_typed(sdk, client, dsl, at, cls, code, status):
    with pytest.raises(cls) as info:
        sdk.evaluate(dsl, at)
    err = info.value
    raw = client.post("/v1/evaluate", json={"function": {"dsl": dsl}, "at": at})
    assert (err.status, err.code) == (raw.status_code, raw.json()["error"]["code"]) == (status, code)
    assert err.message == raw.json()["error"]["message"] and err.detail == raw.json()["error"]["detail"]
    assert isinstance(err, dd.errors.ClientError) and isinstance(err, dd.DerivdError)


def test_parse_error_names_line_and_column(sdk):
    with pytest.raises(dd.ParseError) as info:
        sdk.evaluate("y = x * 2\nsum(y +* 1)", x=[1.0])
    assert info.value.detail["line"] == 2 and info.value.detail["column"] >= 1


def test_limit_and_not_found(sdk):
    with pytest.raises(dd.LimitExceeded) as info:
        sdk.evaluate("x" + " + x" * 200_000, x=1.0)
    assert info.value.status == 413 and "limit" in info.value.detail
    with pytest.raises(dd.NotFound) as info:
        sdk.gradient(dd.FunctionRef("0" * 32), x=[1.0])
    assert info.value.status == 404


def test_scalar_endpoint_refuses_a_vector_output(sdk):
    with pytest.raises(dd.errors.ClientError) as info:
        sdk.gradient("x * 2", x=[1.0, 2.0])
    assert info.value.status // 100 == 4 and info.value.code


def test_blackbox_refused_by_the_allow_list(sdk):
    with pytest.raises(dd.errors.BlackboxRefused) as info:
        sdk.register_blackbox("local", "http://127.0.0.1:9/", input_size=1, output_size=1)
    assert info.value.code == "blackbox_refused" and info.value.status // 100 == 4


def test_api_key(server):
    from derivd.config import Settings

    with LiveServer(Settings(api_keys=["s3cret"])) as locked:
        with dd.Client(locked.url, retries=0) as c, pytest.raises(dd.errors.ClientError) as info:
            c.gradient("sum(x**2)", x=[1.0, 2.0])
        assert info.value.status in (401, 403)
        with dd.Client(locked.url, api_key="s3cret") as c:
            np.testing.assert_array_equal(c.gradient("sum(x**2)", x=[1.0, 2.0]).gradient["x"], [2.0, 4.0])


def test_error_classes_by_code_then_status_family():
    body = {"error": {"code": "something_new", "message": "m", "detail": {"k": 1}}}
    assert type(dd.errors.from_response(418, body)) is dd.errors.ClientError
    assert type(dd.errors.from_response(503, body)) is dd.errors.ServerError
    assert type(dd.errors.from_response(502, {"error": {"code": "blackbox_error", "message": ""}})) is dd.UpstreamError
    assert type(dd.errors.from_response(504, {"error": {"code": "blackbox_timeout", "message": ""}})) \
        is dd.errors.UpstreamTimeout
    # a code whose class belongs to another family never overrides the status
    assert type(dd.errors.from_response(500, {"error": {"code": "parse_error", "message": ""}})) is dd.ServerError
    assert type(dd.errors.from_response(500, "not json")) is dd.ServerError


class FlakyProxy:
    """TCP proxy to a live server that drops the first ``drops`` connections without a byte,
    and counts connections and HTTP requests passed through."""

    def __init__(self, target_port: int, drops: int):
        self.target_port, self.drops = target_port, drops
        self.connections = self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.drops:
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, False), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while data := src.recv(65536):
                if count:
                    self.requests += data.count(b"POST /") + data.count(b"GET /")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_connection_drops_are_retried(server):
    proxy = FlakyProxy(server.port, drops=2)
    try:
        with dd.Client(proxy.url, retries=3, backoff=0.01) as c:
            r = c.gradient("sum(x**3)", x=[1.0, -2.0])
        np.testing.assert_array_equal(r.gradient["x"], [3.0, 12.0])
        assert proxy.connections == 3 and proxy.requests == 1
    finally:
        proxy.close()


def test_answers_are_never_retried(server):
    proxy = FlakyProxy(server.port, drops=0)
    try:
        with dd.Client(proxy.url, retries=5, backoff=0.01) as c, pytest.raises(dd.ParseError):
            c.evaluate("x +* 1", x=1.0)
        assert proxy.requests == 1
    finally:
        proxy.close()


def sleeps_of_this_thread(monkeypatch) -> list[float]:
    """The pauses this thread asks of ``time.sleep`` from now on (taken, not timed); other threads
    sleep as usual."""
    pauses, sleep, me = [], time.sleep, threading.current_thread()

    def recording(seconds):
        if threading.current_thread() is me:
            pauses.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording)
    return pauses


def test_nothing_listening_gives_connection_failed(monkeypatch):
    pauses = sleeps_of_this_thread(monkeypatch)
    with dd.Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as c, \
            pytest.raises(dd.ConnectionFailed) as info:
        c.evaluate("x", x=1.0)
    assert info.value.status is None and "3 attempt" in info.value.message
    # between the 3 attempts, 2 pauses of the backoff doubling, each jittered down by at most half
    assert len(pauses) == 2 and all(0.5 * 0.01 * 2 ** k <= p <= 0.01 * 2 ** k for k, p in enumerate(pauses))


def test_timeout_is_not_retried():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts into the backlog; nobody ever reads or answers
    try:
        with dd.Client(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3, retries=3) as c:
            with pytest.raises(dd.RequestTimeout):
                c.evaluate("x", x=1.0)
        silent.setblocking(False)
        connections = []
        with contextlib.suppress(BlockingIOError):
            while True:
                connections.append(silent.accept()[0])
        assert len(connections) == 1  # one attempt: a timeout may have been an answer in the making
        for conn in connections:
            conn.close()
    finally:
        silent.close()
