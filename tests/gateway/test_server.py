"""The gateway's uvicorn protocol: a response's head and body leave in one write, and nothing a
client relies on (keep-alive, pipelining, Connection: close, large bodies) changes."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import orjson

from derivd.gateway.server import _CoalescingTransport
from tests.references import ROSENBROCK, rosenbrock_gradient


class RecordingTransport:
    def __init__(self):
        self.writes, self.closed = [], False

    def write(self, data):
        self.writes.append(bytes(data))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_writes_within_one_loop_iteration_become_one_and_close_flushes_first():
    async def scenario():
        t = RecordingTransport()
        c = _CoalescingTransport(t, asyncio.get_running_loop())
        c.write(b"HTTP/1.1 200 OK\r\n\r\n")
        c.write(b"{}")
        assert t.writes == []  # nothing leaves before the iteration ends
        await asyncio.sleep(0)
        assert t.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        c.write(b"last")
        c.close()
        assert t.writes[-1] == b"last" and t.closed
        assert c.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the real transport's

    asyncio.run(scenario())


def request(path: str, body: dict, close: bool = False) -> bytes:
    data = orjson.dumps(body)
    extra = "Connection: close\r\n" if close else ""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def read_response(f) -> tuple[int, dict]:
    status = int(f.readline().split()[1])
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, orjson.loads(f.read(length))


def test_pipelined_requests_on_one_connection_are_answered_in_order(server):
    xs = [np.array([0.5, -1.0, 2.0]) * k for k in (1.0, 2.0, 3.0)]
    raw = b"".join(request("/v1/gradient", {"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}})
                   for x in xs)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s, s.makefile("rb") as f:
        s.sendall(raw)  # all three before reading any answer
        for x in xs:
            status, body = read_response(f)
            assert status == 200
            np.testing.assert_allclose(body["gradient"]["x"], rosenbrock_gradient(x), rtol=1e-13)


def test_connection_close_gets_its_whole_answer_then_eof(server):
    x = np.linspace(-1, 1, 2000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s, s.makefile("rb") as f:
        s.sendall(request("/v1/gradient", {"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}}, close=True))
        status, body = read_response(f)
        assert status == 200
        np.testing.assert_allclose(body["gradient"]["x"], rosenbrock_gradient(x), rtol=1e-12)
        assert f.read() == b""  # closed after the answer, not before


def test_a_large_answer_arrives_whole(client):
    n = 400  # a 400 x 400 Jacobian: ~3 MB of JSON, past the socket buffers (flow control)
    r = client.post("/v1/jacobian", json={"function": {"dsl": "x * x[0]"}, "at": {"x": np.ones(n).tolist()}})
    assert r.status_code == 200
    expected = np.eye(n)
    expected[:, 0] += 1.0
    np.testing.assert_allclose(np.array(r.json()["jacobian"]), expected)
