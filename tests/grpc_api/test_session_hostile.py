"""The session socket against hostile clients, over real TCP: every refusal is one answer with a 4xx/5xx
status and a message saying what and where, the connection then closed, and the server goes on serving
others. Requests where a hello is due (a second ``end``, an ``ask`` or ``open`` after ``ended``), garbage
and oversized frames, kinds out of range, bad points and orders; a frame trickled a byte at a time (cut
at its timeout, not held per byte); floods of kept and of silent connections; hundreds of pipelined asks
then a client gone (no thread or socket left); a stop while a connection is kept; the rate limit per
session on a kept connection; and the pipelining SDK under a server killed mid-flight and restarted on
the same ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import psutil
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from tests.conftest import HOLD
from tests.grpc_api.test_session_socket import FRAME, ROSEN, Raw
from tests.grpc_api.wire import arr, fn, unarr
from tests.references import rosenbrock, rosenbrock_gradient
from tests.support import free_port, wait_for

from derivd_client import errors
from derivd_client.grpc_client import AsyncGrpcClient, GrpcClient

END = pb.SessionRequest(end=pb.SessionEnd())


def ask(x, kind=pb.SESSION_GRADIENT, ask_id=1, **fields) -> pb.SessionRequest:
    return pb.SessionRequest(ask=pb.SessionAsk(id=ask_id, kind=kind, x=x if isinstance(x, pb.Array) else arr(x),
                                               **fields))


def opening(x0, kind=pb.SESSION_VALUE) -> pb.SessionRequest:
    return pb.SessionRequest(open=pb.SessionOpen(function=fn(ROSEN), at={"x": arr(x0)}, wrt=["x"], kind=kind))


def ended(raw: Raw) -> Raw:
    raw.send(END)
    assert raw.receive().WhichOneof("message") == "ended"
    return raw


def kept(port: int) -> Raw:
    """A connection whose session ended with ``end``: kept by the server for the next hello."""
    raw = Raw(port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    return ended(raw)


def refusal(raw: Raw) -> tuple[int, str, str, dict]:
    """The refusal that ends the session (status, code, message, detail), after which the server closes."""
    answer = raw.refused()
    raw.close()
    assert answer.status >= 400 and answer.error.message
    return answer.status, answer.error.code, answer.error.message, json.loads(answer.error.detail_json)


def served(port: int) -> None:
    """A fresh client's session answers as the references: the server goes on serving."""
    raw = Raw(port, pb.SessionSocketHello())
    x = np.array([0.4, -0.7, 1.3])
    assert np.isclose(unarr(raw.open(x).value)[0], rosenbrock(x), rtol=1e-14)
    raw.send(ask(x))
    np.testing.assert_allclose(unarr(raw.receive().answer.gradient), rosenbrock_gradient(x), rtol=1e-13)
    raw.close()


def conn_threads() -> int:
    return sum(t.name == "session-socket-conn" for t in threading.enumerate())


def server_sockets(port: int) -> list:
    """This process's TCP sockets on the server's side of ``port`` (accepted connections, not the listener)."""
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status != psutil.CONN_LISTEN]


@pytest.mark.parametrize("where_hello_is_due", [
    END,  # `end` twice
    ask(np.zeros(2)),  # an ask after `end` (all-zero bytes parse as a hello's request_id)
    ask([0.3, 1.7]),
    opening(np.zeros(2)),  # the next session opened without its hello
])
def test_a_request_where_a_hello_is_due_is_refused_not_waited_on(stack, where_hello_is_due):
    raw = kept(stack.grpc.sessions.port)
    raw.send(where_hello_is_due)
    status, code, message, detail = refusal(raw)
    assert (status, code, detail["field"]) == (422, "invalid_request", "frame")
    assert "not a SessionSocketHello" in message and "`end`" in message
    served(stack.grpc.sessions.port)


def test_end_before_open_and_open_twice_end_the_session_with_422(stack):
    port = stack.grpc.sessions.port
    raw = Raw(port, pb.SessionSocketHello())
    raw.send(END)
    status, _, message, detail = refusal(raw)
    assert status == 422 and "`open`" in message and detail["field"] == "open"
    raw = Raw(port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    raw.send(opening(np.zeros(2)))
    status, _, message, detail = refusal(raw)
    assert status == 422 and "`ask` (or `end`)" in message and detail["field"] == "ask[0]"
    raw = Raw(port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    raw.send(pb.SessionRequest())  # a request that is none of open, ask, end
    assert refusal(raw)[0] == 422
    served(port)


def test_garbage_and_oversized_frames_are_refused_with_what_and_where(serve):
    server = serve(grpc_max_message_bytes=1000)
    port = server.sessions.port
    raw = Raw(port)
    raw.send_bytes(b"\xff\xff\xff\xff")
    status, code, message, _ = refusal(raw)
    assert (status, code) == (422, "invalid_request") and "not a SessionSocketHello" in message
    raw = Raw(port)
    raw.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # an HTTP client at the wrong port: a 1.3 GB "frame"
    status, code, message, detail = refusal(raw)
    assert (status, code, detail["limit"]) == (413, "limit_exceeded", "grpc_max_message_bytes") and "1000" in message
    raw = Raw(port)
    raw.sock.sendall(b"\x05\x00")
    raw.sock.shutdown(socket.SHUT_WR)  # the connection ends inside a frame's length
    status, _, message, detail = refusal(raw)
    assert status == 422 and "inside a frame's length (2 of 4 bytes)" in message and detail["field"] == "frame"
    raw = kept(port)  # a kept connection's next hello is held to the same limit
    raw.sock.sendall(FRAME.pack(1 << 31))
    assert refusal(raw)[:2] == (413, "limit_exceeded")
    raw = Raw(port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    raw.send_bytes(b"\x0a\x05\x01")  # a SessionRequest cut short
    status, _, message, _ = refusal(raw)
    assert status == 422 and "not a SessionRequest" in message
    served(port)


@pytest.mark.parametrize("timeout_s", [float("nan"), float("inf"), -1.0])
def test_a_hello_deadline_that_is_no_number_of_seconds_is_refused(stack, timeout_s):
    status, _, message, detail = refusal(Raw(stack.grpc.sessions.port, pb.SessionSocketHello(timeout_s=timeout_s)))
    assert status == 422 and detail["field"] == "hello.timeout_s" and "hello.timeout_s" in message


@pytest.mark.parametrize("kind", [99, -1, pb.SESSION_HVP, pb.SESSION_TAYLOR])
def test_an_opening_of_a_kind_it_cannot_answer_is_refused(stack, kind):
    raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello())
    raw.send(opening(np.zeros(2), kind))
    status, code, message, detail = refusal(raw)
    assert (status, code, detail["field"]) == (422, "invalid_request", "open.kind") and str(kind) in message


def test_bad_asks_are_refused_each_and_the_session_goes_on(stack):
    raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    bad = [(ask([1.0, 2.0], kind=99), 422, "ask.kind"),
           (ask([1.0, 2.0], kind=-1), 422, "ask.kind"),
           (ask([1.0]), 422, "ask.x"),  # wrong size
           (ask([[1.0, 2.0]]), 422, "ask.x"),  # not flat
           (ask(pb.Array(shape=[2], data=b"\0" * 15, dtype="float64")), 422, "ask.x"),
           (ask(pb.Array(shape=[1 << 40, 1 << 40], data=b"\0" * 16, dtype="float64")), 422, "ask.x"),
           (ask(pb.Array(shape=[2], data=b"\0" * 32, dtype="complex128")), 422, "ask.x"),
           (ask([1.0, 2.0], kind=pb.SESSION_HVP), 422, "ask.v"),  # no direction
           (ask([1.0, 2.0], kind=pb.SESSION_TAYLOR, v=arr([1.0, 0.0]), order=-5), 422, "order"),
           (ask([1.0, 2.0], kind=pb.SESSION_TAYLOR, v=arr([1.0, 0.0]), order=2**31 - 1), 413, "max_taylor_order")]
    for i, (request, status, where) in enumerate(bad):
        request.ask.id = 100 + i
        raw.send(request)
        answer = raw.receive().answer
        assert (answer.id, answer.status) == (100 + i, status), answer
        assert where in answer.error.detail_json and answer.error.message
        x = np.array([0.2 * i, 1.0 - 0.1 * i])
        raw.send(ask(x, ask_id=i))  # the session goes on
        np.testing.assert_allclose(unarr(raw.receive().answer.gradient), rosenbrock_gradient(x), rtol=1e-13)
    raw.close()


def test_non_finite_points_answer_as_the_unary_call_does(stack):
    raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello())
    raw.open(np.zeros(2))
    for x in ([np.nan, 1.0], [np.inf, 1.0], [-np.inf, np.inf]):
        raw.send(ask(x, kind=pb.SESSION_VALUE))
        answer = raw.receive().answer
        unary = stack.stub.Evaluate(pb.EvaluateRequest(function=fn(ROSEN), at={"x": arr(x)}), timeout=30)
        assert not answer.HasField("error")
        np.testing.assert_array_equal(unarr(answer.value), unarr(unary.value).reshape(-1))
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(unarr(answer.value), [rosenbrock(np.array(x))])
    raw.close()


def trickle(sock: socket.socket, data: bytes, pace_s: float) -> tuple[threading.Thread, threading.Event]:
    """Send ``data`` a byte every ``pace_s`` from a thread of its own, until the server closes or the event
    returned is set."""
    def run():
        for b in data:
            try:
                sock.sendall(bytes([b]))
            except OSError:
                return
            stop.wait(pace_s)

    stop = threading.Event()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop


@pytest.mark.parametrize("stage", ["hello", "ask", "kept"])
def test_a_frame_trickled_byte_by_byte_is_cut_at_its_timeout_and_frees_its_slot(serve, stage):
    """0.5 s per frame, a byte every 0.2 s: each byte comes within 0.5 s of the last (which a timeout per
    read let through), the whole frame does not."""
    server = serve(grpc_threads=1, http_header_timeout_s=0.5, http_body_timeout_s=0.5)
    port = server.sessions.port
    raw = Raw(port) if stage == "hello" else kept(port) if stage == "kept" else Raw(port, pb.SessionSocketHello())
    if stage == "ask":
        raw.open(np.zeros(2))
    frame = (ask([1.0, 2.0]) if stage == "ask" else pb.SessionSocketHello(request_id="r" * 40)).SerializeToString()
    data = FRAME.pack(len(frame)) + frame
    sender, stop = trickle(raw.sock, data, 0.2)
    status, code, message, _ = refusal(raw)
    assert (status, code) == (408, "request_timeout")
    assert ("http_body_timeout_s" if stage == "ask" else "http_header_timeout_s") in message
    assert sender.is_alive(), "refused while the frame was still coming"
    stop.set()
    sender.join(10)
    served(port)  # the only slot is free again


def test_a_flood_of_kept_connections_does_not_lock_out_a_new_client(serve):
    server = serve(grpc_threads=3)
    port = server.sessions.port
    flood = [kept(port) for _ in range(12)]  # each one takes the slot of an older kept one
    served(port)
    with GrpcClient(f"127.0.0.1:{server.port}", timeout=30, session_transport="socket") as c:
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:
            x = np.array([0.3, 0.1, -0.2])
            np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
    silent = [Raw(port) for _ in range(3)]  # connected, nothing said: they hold the slots until their timeout
    wait_for(lambda: len(server.sessions.open) == 3 and not server.sessions.kept, "the silent ones to hold the slots")
    status, code, message, _ = refusal(Raw(port, pb.SessionSocketHello()))
    assert (status, code) == (503, "too_many_sessions") and "grpc_threads" in message
    for raw in silent + flood:
        raw.close()
    wait_for(lambda: not server.sessions.open, "the slots to be free")
    served(port)


def test_pipelined_asks_then_the_client_gone_leave_no_thread_or_socket(serve):
    server = serve(http_body_timeout_s=1.0)
    port = server.sessions.port
    threads = conn_threads()
    x = np.array([1.0, 2.0, 3.0])
    frame = ask(x, kind=pb.SESSION_HESSIAN).SerializeToString()
    burst = (FRAME.pack(len(frame)) + frame) * 500
    raw = Raw(port, pb.SessionSocketHello())
    raw.open(np.zeros(3))
    raw.sock.sendall(burst)  # 500 asks at once, none of their answers read
    raw.close()
    quiet = Raw(port, pb.SessionSocketHello())  # one that writes asks and neither reads nor closes
    quiet.open(np.zeros(3))
    quiet.sock.settimeout(0.2)
    try:
        for _ in range(200):  # until the buffers both ways are full (the server stops reading)
            quiet.sock.sendall(burst)
    except OSError:
        pass
    wait_for(lambda: conn_threads() <= threads, "the server's threads to end")  # the quiet one: at its timeout
    wait_for(lambda: not server.sessions.open and not [c for c in server_sockets(port)
                                                       if c.status == psutil.CONN_ESTABLISHED],
             "the server's sockets to close")
    quiet.close()
    served(port)


def test_a_stop_ends_a_kept_connection_and_its_thread(serve):
    server = serve()
    threads = conn_threads()
    raw = kept(server.sessions.port)
    wait_for(lambda: server.sessions.kept, "the connection to be kept")
    server.stop(grace=0.5)
    assert raw.receive() is None  # closed at once, not at the keep time
    raw.close()
    wait_for(lambda: conn_threads() <= threads, "the kept connection's thread to end")
    with pytest.raises(OSError):
        Raw(server.sessions.port, pb.SessionSocketHello()).receive()


def test_each_session_on_a_kept_connection_is_checked_for_key_and_rate(serve):
    server = serve(api_keys=["k"], rate_limit_requests=2, rate_limit_window_s=600)
    port = server.sessions.port
    raw = Raw(port, pb.SessionSocketHello(api_key="k"))
    for _ in range(2):
        raw.open(np.zeros(2))
        ended(raw).send(pb.SessionSocketHello(api_key="k"))
    status, code, message, _ = refusal(raw)  # the third session on the same connection
    assert (status, code) == (429, "rate_limited") and "2 requests per 600 s" in message
    assert refusal(Raw(port, pb.SessionSocketHello(api_key="k")))[:2] == (429, "rate_limited")  # spent for the key
    assert refusal(Raw(port, pb.SessionSocketHello(api_key="wrong")))[:2] == (401, "unauthorized")






def test_pipelined_calls_whose_connection_ends_are_asked_again_over_grpc(serve, held):
    """Only the session socket stops (gRPC serves on): the calls in flight on it are answered, over gRPC
    unary, as a unary call a connection failure stopped is retried."""
    entered, release = held
    server = serve()

    async def main():
        async with AsyncGrpcClient(f"127.0.0.1:{server.port}", timeout=30) as c:
            await c.gradient(ROSEN, x=np.ones(3))
            points = [np.array([HOLD, 0.1 * i, 1.0]) for i in range(5)]
            in_flight = [asyncio.ensure_future(c.gradient(ROSEN, x=x)) for x in points]
            await asyncio.to_thread(entered.wait, 30)
            await asyncio.to_thread(server.sessions.stop)
            return points, [r.gradient["x"] for r in await asyncio.gather(*in_flight)]

    points, gradients = asyncio.run(main())
    release.set()
    for x, g in zip(points, gradients):
        np.testing.assert_allclose(g, rosenbrock_gradient(x), rtol=1e-13)


def derivd_serve(port: int, grpc_port: int, socket_port: int) -> subprocess.Popen:
    env = {**os.environ, "DERIVD_SESSION_SOCKET_PORT": str(socket_port), "DERIVD_DATA_DIR": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--port", str(port), "--grpc-port",
                             str(grpc_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200,
                 "derivd serve", 60, ignoring=(httpx.HTTPError,))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_the_pipelining_sdk_under_a_server_killed_mid_flight_and_restarted():
    """Calls in flight when the server dies are asked again over gRPC with the client's retries (then
    answer, or fail with ConnectionFailed): none hangs, none is answered wrong; once the server is back on
    the same ports, calls ride a new pipeline."""
    ports = free_port(), free_port(), free_port()
    proc = derivd_serve(*ports)
    x0 = np.array([0.3, -0.2, 0.9])

    async def main():
        nonlocal proc
        async with AsyncGrpcClient(f"127.0.0.1:{ports[1]}", timeout=30, retries=2, backoff=0.1) as c:
            await c.gradient(ROSEN, x=x0)
            first = set(c.pipelines)
            outcomes, stop = [], asyncio.Event()

            async def caller(i: int):
                while not stop.is_set():
                    x = x0 + 1e-3 * i
                    try:
                        got = (await c.gradient(ROSEN, x=x)).gradient["x"]
                        np.testing.assert_allclose(got, rosenbrock_gradient(x), rtol=1e-13)
                        outcomes.append("answered")
                    except errors.ConnectionFailed:
                        outcomes.append("connection_failed")

            callers = [asyncio.ensure_future(caller(i)) for i in range(20)]
            await asyncio.to_thread(wait_for, lambda: len(outcomes) > 200, "calls to be answered")
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            proc = await asyncio.to_thread(derivd_serve, *ports)
            answered = len(outcomes)
            await asyncio.to_thread(wait_for, lambda: outcomes[answered:].count("answered") > 200,
                                    "calls to be answered by the new server")
            stop.set()
            await asyncio.gather(*callers)
            return outcomes, first, set(c.pipelines)

    try:
        outcomes, first, now = asyncio.run(main())
    finally:
        proc.kill()
        proc.wait()
    assert set(outcomes) <= {"answered", "connection_failed"}
    assert now and not now & first  # new connections to the new server's socket
