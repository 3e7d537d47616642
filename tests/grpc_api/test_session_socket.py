"""The session socket over real TCP: framed ``Session`` messages answer as the references; ``Transports``
names the port; a wrong API key, an unreadable or oversized frame, the deadline and a full server each
end the session with one refusal (status and contract code) and a closed connection; a refused ask
leaves it open; a stopped server closes its sessions at once."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import numpy as np
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.wire import arr, fn, unarr
from tests.references import rosenbrock, rosenbrock_gradient

from derivd_client import errors
from derivd_client.grpc_client import AsyncGrpcClient, GrpcClient

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
FRAME = struct.Struct("<I")


class Raw:
    """A session socket driven frame by frame, as a client in another language would."""

    def __init__(self, port: int, hello: pb.SessionSocketHello | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")
        if hello is not None:
            self.send(hello)

    def send(self, message) -> None:
        self.send_bytes(message.SerializeToString())

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(FRAME.pack(len(data)) + data)

    def receive(self) -> pb.SessionResponse | None:
        header = self.reader.read(FRAME.size)
        if not header:
            return None  # the server closed the connection
        return pb.SessionResponse.FromString(self.reader.read(FRAME.unpack(header)[0]))

    def open(self, x0) -> pb.SessionOpened:
        self.send(pb.SessionRequest(open=pb.SessionOpen(function=fn(ROSEN), at={"x": arr(x0)}, wrt=["x"])))
        return self.receive().opened

    def refused(self) -> pb.SessionAnswer:
        """The refusal that ends the session, then the end of the connection."""
        answer = self.receive().answer
        assert answer.HasField("error") and self.receive() is None
        return answer

    def close(self):
        self.reader.close()
        self.sock.close()


def test_transports_names_the_port_and_a_raw_session_answers_the_references(stack):
    port = stack.stub.Transports(pb.TransportsRequest(), timeout=10).session_socket_port
    assert port == stack.grpc.sessions.port > 0
    raw = Raw(port, pb.SessionSocketHello(request_id="r-1"))
    x0 = np.array([0.5, -0.3, 1.2])
    opened = raw.open(x0)
    assert list(opened.wrt) == ["x"] and list(opened.n) == [3]
    assert np.isclose(unarr(opened.value)[0], rosenbrock(x0), rtol=1e-14)
    for i, x in enumerate(np.random.default_rng(3).normal(size=(3, 3))):
        raw.send(pb.SessionRequest(ask=pb.SessionAsk(id=i + 7, kind=pb.SESSION_GRADIENT, x=arr(x))))
        answer = raw.receive().answer
        assert answer.id == i + 7 and answer.engine
        assert np.isclose(unarr(answer.value)[0], rosenbrock(x), rtol=1e-14)
        np.testing.assert_allclose(unarr(answer.gradient), rosenbrock_gradient(x), rtol=1e-13)
    raw.close()
    metrics = stack.http.get("/metrics").text  # the asks are counted under their own transport
    assert 'derivd_requests_total{engine="reverse",route="session.gradient",status="200",transport="socket"}' in metrics


def test_a_refused_ask_then_an_unreadable_frame(stack):
    raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello())
    raw.open(np.zeros(4))
    raw.send(pb.SessionRequest(ask=pb.SessionAsk(id=1, kind=pb.SESSION_GRADIENT, x=arr(np.zeros(3)))))
    answer = raw.receive().answer  # refused, and the session goes on
    assert answer.status == 422 and answer.error.code == "invalid_request" and "4 wrt values" in answer.error.message
    x = np.array([0.1, 0.2, 0.3, 0.4])
    raw.send(pb.SessionRequest(ask=pb.SessionAsk(id=2, kind=pb.SESSION_GRADIENT, x=arr(x))))
    np.testing.assert_allclose(unarr(raw.receive().answer.gradient), rosenbrock_gradient(x), rtol=1e-13)
    raw.send_bytes(b"\xff\xff\xff")  # not a SessionRequest: the session ends with the reason
    answer = raw.refused()
    assert answer.status == 422 and answer.error.code == "invalid_request" and "SessionRequest" in answer.error.message
    raw.close()


def test_the_first_request_must_open(stack):
    raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello())
    raw.send(pb.SessionRequest(ask=pb.SessionAsk(id=1, x=arr([1.0]))))
    answer = raw.refused()
    assert answer.status == 422 and "`open`" in answer.error.message
    raw.close()


def test_an_oversized_frame_is_refused_before_it_is_read(serve):
    server = serve(grpc_max_message_bytes=1000)
    raw = Raw(server.sessions.port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    raw.sock.sendall(FRAME.pack(1001))  # only the length: the server must not wait for the bytes
    answer = raw.refused()
    assert answer.status == 413 and answer.error.code == "limit_exceeded" and "1001" in answer.error.message
    raw.close()


def test_the_api_key_is_checked_on_the_socket_as_on_grpc(serve):
    server = serve(api_keys=["right-key"])
    target = f"127.0.0.1:{server.port}"
    raw = Raw(server.sessions.port, pb.SessionSocketHello(api_key="wrong"))
    answer = raw.refused()  # before any open is read
    assert answer.status == 401 and answer.error.code == "unauthorized"
    raw.close()
    with GrpcClient(target, api_key="right-key", session_transport="socket") as c:
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:
            x = np.array([0.3, 0.1, -0.2])
            np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
    with GrpcClient(target, api_key="wrong", session_transport="socket") as c:
        with pytest.raises(errors.ClientError) as e:  # Transports itself is guarded, as every derivd method
            c.session(ROSEN, {"x": np.zeros(3)})
        assert e.value.status == 401 and e.value.code == "unauthorized"

    async def asynchronous():  # the asyncio session: the key in its hello, refused as on the blocking one
        async with AsyncGrpcClient(target, api_key="right-key", session_transport="socket") as c:
            async with await c.session(ROSEN, {"x": np.zeros(3)}) as s:
                x = np.array([0.3, 0.1, -0.2])
                np.testing.assert_allclose(await s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
        async with AsyncGrpcClient(target, api_key="right-key", session_transport="socket") as c:
            c.api_key = "wrong"  # Transports was asked with the right key; the socket's hello says "wrong"
            await c._socket_port()
            with pytest.raises(errors.ClientError) as e:
                await c.session(ROSEN, {"x": np.zeros(3)})
            assert e.value.status == 401 and e.value.code == "unauthorized"

    asyncio.run(asynchronous())


def test_the_rate_limit_counts_each_ask_on_the_socket(serve):
    """The opening is one request and each ask another (the SDK pipelines unary calls on the socket): past the
    limit an ask is refused with 429 and the session goes on; a new connection is refused at its hello."""
    server = serve(rate_limit_requests=3, rate_limit_window_s=600)
    first = Raw(server.sessions.port, pb.SessionSocketHello())
    first.open(np.zeros(2))
    answers = []
    for _ in range(3):
        first.send(pb.SessionRequest(ask=pb.SessionAsk(kind=pb.SESSION_GRADIENT, x=arr(np.array([0.3, -0.7])))))
        answers.append(first.receive().answer)
    assert [a.HasField("error") for a in answers] == [False, False, True]
    np.testing.assert_allclose(unarr(answers[0].gradient), rosenbrock_gradient(np.array([0.3, -0.7])), rtol=1e-13)
    assert answers[2].status == 429 and answers[2].error.code == "rate_limited"
    assert "3 requests per 600 s" in answers[2].error.message
    answer = Raw(server.sessions.port, pb.SessionSocketHello()).refused()
    assert answer.status == 429 and answer.error.code == "rate_limited"
    first.close()


def test_the_sessions_deadline_ends_it_with_504(stack):
    raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello(timeout_s=0.5))
    raw.open(np.zeros(2))
    t0 = time.monotonic()
    answer = raw.refused()  # nothing asked: the server ends the session at its deadline
    assert answer.status == 504 and answer.error.code == "deadline_exceeded"
    assert time.monotonic() - t0 < 5
    raw.close()


def test_a_silent_client_is_let_go(serve, monkeypatch):
    """No hello within http_header_timeout_s, or nothing asked for IDLE_S: 408, and the slot is free."""
    from derivd.grpc_api import session_socket

    server = serve(http_header_timeout_s=0.3)
    answer = Raw(server.sessions.port).refused()
    assert answer.status == 408 and "SessionSocketHello" in answer.error.message
    monkeypatch.setattr(session_socket, "IDLE_S", 0.3)
    raw = Raw(server.sessions.port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    answer = raw.refused()
    assert answer.status == 408 and answer.error.code == "session_idle"
    raw.close()


def test_one_session_past_the_limit_is_refused_with_503(serve):
    server = serve(grpc_threads=1)
    first = Raw(server.sessions.port, pb.SessionSocketHello())
    first.open(np.zeros(2))
    answer = Raw(server.sessions.port).refused()
    assert answer.status == 503 and answer.error.code == "too_many_sessions"
    first.close()


def test_a_stopped_server_ends_its_sessions_and_the_sdk_says_so(serve):
    server = serve()
    with GrpcClient(f"127.0.0.1:{server.port}", timeout=30) as c:
        s = c.session(ROSEN, {"x": np.zeros(3)})
        assert type(s).__name__ == "SocketSession"
        s.gradient(np.ones(3))
        server.stop(grace=0.5)
        t0 = time.monotonic()
        with pytest.raises(errors.ConnectionFailed):
            s.gradient(np.ones(3))
        assert time.monotonic() - t0 < 5  # at once, not at the client's timeout
        s.close()


def test_off_the_sdk_uses_grpc_or_refuses_when_told_socket(serve):
    server = serve(session_socket_port=-1)
    assert server.sessions is None
    target = f"127.0.0.1:{server.port}"
    with GrpcClient(target) as c:
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:
            assert type(s).__name__ == "Session"
            np.testing.assert_allclose(s.gradient(np.ones(3)), rosenbrock_gradient(np.ones(3)), atol=1e-12)
    with GrpcClient(target, session_transport="socket") as c:
        with pytest.raises(errors.ConnectionFailed, match="no session socket"):
            c.session(ROSEN, {"x": np.zeros(3)})


def test_auto_falls_back_to_grpc_when_the_port_is_not_a_session_socket(stack):
    """What answers at the advertised port (a proxy's host, say) may be anything: the SDK opens the
    session on gRPC instead, and keeps to gRPC for that client. The HTTP answer stays open: its first
    bytes read as a 1.3 GB frame, refused at once, not waited for."""
    other = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def answer_as_http():
        conn, _ = other.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        done.wait(60)
        conn.close()

    thread = threading.Thread(target=answer_as_http, daemon=True)
    thread.start()
    with GrpcClient(stack.target, timeout=10) as c:  # waiting for the 1.3 GB would be a RequestTimeout
        c._session_port = other.getsockname()[1]  # as if Transports had named it
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:
            assert type(s).__name__ == "Session" and c._session_port == 0
            np.testing.assert_allclose(s.gradient(np.ones(3)), rosenbrock_gradient(np.ones(3)), atol=1e-12)
    done.set()
    thread.join(timeout=5)
    other.close()
