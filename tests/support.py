"""What tests share beyond references: waiting for a condition, free ports, one black-box server.

``BlackBoxServer`` is a real HTTP black box on 127.0.0.1 whose behaviour is chosen by the path
(``/f``, ``/gate``, ``/flaky``, ``/hang``, bad answers, ...), plus any numpy functions a test
serves at paths of its own; it records what reached it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import random
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def grpc_servers(dispatcher):
    """``start(port=0, **settings)``: a real GrpcServer (with its session socket) on 127.0.0.1 in front of
    ``dispatcher``, with these settings; every one started is stopped at the end."""
    from derivd.config import Settings
    from derivd.grpc_api.server import GrpcServer

    started = []

    def start(port: int = 0, **fields):
        started.append(GrpcServer(dispatcher, Settings(host="127.0.0.1", **fields), port, host="127.0.0.1").start())
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop(grace=0.5)


def python_ast(text: str) -> ast.Module:
    """``ast.parse`` under the server's parse lock: CPython 3.11 corrupts the AST constructor's
    interpreter-wide depth counter when two threads build trees at once, and a test runs beside
    in-process servers parsing programs (see ``derivd.dsl.parse``)."""
    from derivd.dsl.parse import AST_LOCK
    with AST_LOCK:
        return ast.parse(text)


def wait_for(condition, what: str, timeout_s: float = 30.0, ignoring: tuple = ()):
    """Poll ``condition()`` until it returns something truthy, and return that; exceptions of the
    ``ignoring`` types count as not yet. Fails naming ``what`` after ``timeout_s`` (a limit on
    waiting, never a measurement: tests wait for events, they do not time them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except ignoring:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


def f(x: list[float]) -> list[float]:
    """The function the black box's ``/f`` computes: R^n -> R^2."""
    return [sum(v * v for v in x), math.prod(math.sin(v) for v in x)]


BAD_ANSWERS = {
    "/nan": {"y": [float("nan"), 1.0]},  # json.dumps writes the non-JSON token NaN
    "/short": {"y": [1.0]},
    "/long": {"y": [1.0, 2.0, 3.0]},
    "/string": {"y": [1.0, "2"]},
    "/noy": {"z": [1.0, 2.0]},
    "/batch-short": {"ys": [[1.0, 2.0]]},
}


class BlackBoxServer:
    """A black box over real sockets on 127.0.0.1, its behaviour chosen by path.

    A minimal HTTP/1.1 server on asyncio with keep-alive, on its own thread
    and loop. Not http.server: that spends about a millisecond of GIL per
    request parsing headers, which would put the test server's overhead into
    the latency measurements. It records every connection and request so
    tests can assert what reached the black box, and that nothing did.

    ``functions`` maps more paths to numpy functions of one point: POST
    ``{"x": [...]}`` answers ``{"y": f(x)}``, and ``{"xs": [...]}`` a batch.
    ``/gate`` answers as ``/f`` once the gate is open (``hold()`` closes it,
    ``release()`` opens it; open after ``reset()``), so a test can see how many
    calls are in flight together without timing anything. ``/hang`` never
    answers. A context manager, or ``close()`` when done.
    """

    def __init__(self, functions: dict | None = None):
        self.functions = dict(functions or {})
        self.lock = threading.Lock()
        self.reset()
        self._handlers: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=128), self.loop
        ).result()
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self):
        async def stop():
            self._server.close()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reset(self):
        with self.lock:
            self.connections = 0
            self.requests: list[tuple[str, dict, dict]] = []  # (path, JSON body, lower-cased headers)
            self.flaky_rng = random.Random(1234)
            self.failures = 0
            self.in_flight = self.max_in_flight = 0
            self.gate_open = True

    def hold(self):
        """Calls to ``/gate`` wait from now on, until ``release()``."""
        with self.lock:
            self.gate_open = False

    def release(self):
        with self.lock:
            self.gate_open = True

    f = staticmethod(f)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _, _ in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        with self.lock:
            self.connections += 1
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                path = head[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if h)}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", 0))))
                with self.lock:
                    self.requests.append((path, body, headers))
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await self._answer(path, body, reader, writer)
                finally:
                    with self.lock:
                        self.in_flight -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up, e.g. after its timeout
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _answer(self, path: str, body: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        def send(obj, status=200, extra=b""):
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                % (status, len(data), extra, data)
            )
            return writer.drain()

        if path in self.functions:
            fn = self.functions[path]
            if "xs" in body:
                return await send({"ys": [np.atleast_1d(fn(np.asarray(x))).tolist() for x in body["xs"]]})
            return await send({"y": np.atleast_1d(fn(np.asarray(body["x"]))).tolist()})
        if path == "/hang":  # until the client hangs up (or the server closes)
            await reader.read()
            return
        if path == "/gate":
            while not self.gate_open:
                await asyncio.sleep(0.005)
        if path in ("/f", "/gate", "/slow50"):  # /slow50: 50 ms a call, for bench/blackbox_latency.py
            await asyncio.sleep(0.05 if path == "/slow50" else 0)
            return await send({"y": f(body["x"])})
        if path == "/flaky":
            with self.lock:
                fail = self.flaky_rng.random() < 0.2
                self.failures += fail
            return await send({"error": "overloaded"} if fail else {"y": f(body["x"])}, 500 if fail else 200)
        if path == "/batch":
            return await send({"ys": [f(x) for x in body["xs"]]})
        if path == "/redirect":
            return await send(b"", 302, b"Location: http://169.254.169.254/latest/meta-data/\r\n")
        if path == "/status/404":
            return await send({"error": "no such thing"}, 404)
        if path == "/big":
            return await send({"y": [1.0] * 100_000})
        if path == "/bigstream":  # no Content-Length: the cap must count bytes as they arrive
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"1.0," * 4096
            for _ in range(64):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return await writer.drain()
        if path == "/notjson":
            return await send(b"<html>oops</html>")
        if path in BAD_ANSWERS:
            return await send(BAD_ANSWERS[path])
        return await send({"error": "unknown path"}, 404)
