"""What one connection may cost, over raw sockets on loopback, every test bounded in time: header
size and count (431), slow heads and bodies (408), bodies capped as they stream (413), refusals
answered after the answers owed to earlier pipelined requests, then the connection closed."""

from __future__ import annotations

import socket
import time

import numpy as np
import orjson
import pytest

from derivd.config import Settings
from tests.conftest import LiveServer
from tests.references import ROSENBROCK, rosenbrock_gradient

LIMITS = Settings(http_header_timeout_s=1.0, http_body_timeout_s=1.0, max_request_bytes=64 * 1024)
BODY = orjson.dumps({"function": {"dsl": ROSENBROCK}, "at": {"x": [0.5, -1.0, 2.0]}})


@pytest.fixture(scope="module")
def live():
    with LiveServer(LIMITS) as s:
        yield s


def connect(live, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", live.port), timeout=timeout)


def post(path: str = "/v1/gradient", body: bytes = BODY, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Reader:
    """Reads HTTP/1.1 responses (Content-Length framed) from a socket."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> tuple[int, dict, dict]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed before a response")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside a response")
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, orjson.loads(body)

    def closed(self) -> bool:
        """True once the server has closed (EOF or reset), within the socket's timeout."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        return True


def flood_until_answered(sock: socket.socket, first: bytes, piece: bytes, budget: int) -> tuple[int, bytes]:
    """Send ``first``, then ``piece`` repeatedly until the server answers or ``budget`` bytes are out.
    Returns (bytes sent, what the server said, or b"" if it said nothing)."""
    sock.setblocking(False)
    sent, out = 0, first
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            answer = sock.recv(65536)
            sock.setblocking(True)
            return sent, answer
        except BlockingIOError:
            pass
        except ConnectionResetError:
            break
        if sent < budget:
            try:
                n = sock.send(out)
                sent += n
                out = out[n:] or piece
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            time.sleep(0.01)
    sock.setblocking(True)
    return sent, b""


def test_a_head_past_the_byte_limit_is_431_before_it_is_read_whole():
    """A 16 MiB header value: answered 431 (default limit 60 KiB) long before the 16 MiB are sent."""
    with LiveServer(Settings()) as live, connect(live) as s:
        start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
        sent, answer = flood_until_answered(s, start, b"a" * 65536, 16 * 2**20)
        assert answer.startswith(b"HTTP/1.1 431"), (sent, answer[:200])
        assert sent < 8 * 2**20, sent
        reader = Reader(s)
        reader.buf = answer
        status, headers, body = reader.response()
        assert body["error"]["code"] == "headers_too_large"
        assert body["error"]["detail"]["limit"] == "http_max_header_bytes" and body["error"]["detail"]["max"] == 61440
        assert headers["connection"] == "close"


def test_many_small_headers_are_431_past_the_count_limit(live):
    headers = "".join(f"X-H{i}: {i}\r\n" for i in range(101))
    with connect(live) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        reader = Reader(s)
        status, _, body = reader.response()
        assert status == 431 and body["error"]["detail"]["limit"] == "http_max_headers"
        assert reader.closed()
    with connect(live) as s:  # 100 header lines in all are fine
        s.sendall(("GET /healthz HTTP/1.1\r\n" + "".join(f"X-H{i}: {i}\r\n" for i in range(100)) + "\r\n").encode())
        assert Reader(s).response()[0] == 200


def test_slowloris_head_is_408_after_the_header_timeout(live):
    """One header byte every 0.2 s never completes a head: 408 at ~1 s (http_header_timeout_s), closed."""
    with connect(live) as s:
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.2)
        answer = b""
        while time.monotonic() - started < 5 and not answer:
            try:
                answer = s.recv(65536)
            except socket.timeout:
                try:
                    s.sendall(b"a")
                except OSError:
                    break
        elapsed = time.monotonic() - started
        s.settimeout(5)
        reader = Reader(s)
        reader.buf = answer
        status, _, body = reader.response()
        assert status == 408 and body["error"]["detail"]["limit"] == "http_header_timeout_s"
        assert 0.9 < elapsed < 5, elapsed
        assert reader.closed()


def test_an_idle_connection_is_closed_without_an_answer(live):
    with connect(live) as s:
        started = time.monotonic()
        assert s.recv(100) == b""  # EOF: closed by the server, nothing said
        assert 0.9 < time.monotonic() - started < 5


def test_a_body_that_stops_arriving_is_408_after_the_body_timeout(live):
    with connect(live) as s:
        started = time.monotonic()
        s.sendall(post()[:-10])  # all but the last 10 bytes of the body, then nothing
        reader = Reader(s)
        status, _, body = reader.response()
        assert status == 408 and body["error"]["detail"]["limit"] == "http_body_timeout_s"
        assert 0.9 < time.monotonic() - started < 5
        assert reader.closed()


def test_a_chunked_body_is_413_as_it_passes_the_cap_and_no_more_is_read(live):
    """Today a chunked body was read on and dropped after its 413; now reading stops (64 KiB cap)."""
    with connect(live) as s:
        start = (b"POST /v1/gradient HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
        sent, answer = flood_until_answered(s, start, piece, 64 * 2**20)
        assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:200])
        reader = Reader(s)
        reader.buf = answer
        status, headers, body = reader.response()
        assert body["error"]["detail"]["limit"] == "max_request_bytes" and headers["connection"] == "close"
        more, _ = flood_until_answered(s, b"", piece, 256 * 2**20)  # what the server still takes
        assert more < 64 * 2**20, more  # it stops reading within the linger (2 s), not at 256 MiB


def test_a_body_announced_too_large_is_413_and_the_connection_closes(live):
    with connect(live) as s:
        s.sendall(b"POST /v1/gradient HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n" + b" " * 1000)
        reader = Reader(s)
        status, _, body = reader.response()
        assert status == 413 and body["error"]["detail"]["limit"] == "max_request_bytes"
        assert reader.closed()


def test_a_pipelined_request_keeps_its_answer_when_a_malformed_one_follows(live):
    """The valid request's answer comes first and right, then a JSON 400 for the malformed one."""
    with connect(live) as s:
        s.sendall(post() + b"NOT-HTTP \x00\x01\r\n\r\n")
        reader = Reader(s)
        status, _, body = reader.response()
        assert status == 200, body
        np.testing.assert_allclose(body["gradient"]["x"], rosenbrock_gradient(np.array([0.5, -1.0, 2.0])),
                                   rtol=1e-13)
        status, headers, body = reader.response()
        assert status == 400 and body["error"]["code"] == "bad_request"
        assert "malformed HTTP request" in body["error"]["message"] and headers["connection"] == "close"
        assert reader.closed()


def test_pipelined_requests_each_keep_their_answer_when_a_later_head_is_too_large(live):
    with connect(live) as s:
        s.sendall(post() + post() + b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        reader = Reader(s)
        assert [reader.response()[0] for _ in range(3)] == [200, 200, 431]
        assert reader.closed()


def test_keep_alive_still_serves_many_requests_on_one_connection(live):
    """The limits are per request: a connection used slowly but properly is never cut."""
    with connect(live) as s:
        reader = Reader(s)
        for _ in range(3):
            s.sendall(post())
            assert reader.response()[0] == 200
            time.sleep(1.3)  # past the header timeout: its timer runs only while a head is on its way


def test_a_pipelined_body_past_the_cap_is_413_after_the_answer_before_it(live):
    """The second request is queued behind the first when its body passes the cap: the first
    still gets its answer, then the 413."""
    big = (b"POST /v1/gradient HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (100_000, b" " * 100_000))
    with connect(live) as s:
        s.sendall(post() + big)
        reader = Reader(s)
        status, _, body = reader.response()
        assert status == 200
        np.testing.assert_allclose(body["gradient"]["x"], rosenbrock_gradient(np.array([0.5, -1.0, 2.0])),
                                   rtol=1e-13)
        status, _, body = reader.response()
        assert status == 413 and body["error"]["detail"]["limit"] == "max_request_bytes"
        assert reader.closed()
