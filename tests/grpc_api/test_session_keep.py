"""Sessions that end with ``end`` and openings that answer their point (issue 12's openings): ``end`` is
answered ``ended`` on gRPC and on the session socket, whose connection then takes the next session (its
hello checked again, counted and logged as a session of its own); a kept connection gives its slot to a
new one and ends silently at its keep time; the SDK opens on a kept connection, and on a new one when
the kept one was dropped, refused or left with an answer owed; an opening of kind gradient, Hessian or
Jacobian answers it at its point as the references do, and one that needs a direction is refused."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api import session_socket
from tests.grpc_api.test_session_socket import ROSEN, Raw
from tests.grpc_api.wire import arr, fn, unarr
from tests.references import rosenbrock, rosenbrock_gradient, rosenbrock_hessian

from derivd_client.grpc_client import GrpcClient

END = pb.SessionRequest(end=pb.SessionEnd())


def sessions_counted(stack) -> float:
    """The socket sessions the metrics have counted (200s)."""
    text = stack.http.get("/metrics").text
    found = re.search(r'derivd_requests_total\{engine="none",route="session",status="200",transport="socket"\} (\S+)',
                      text)
    return float(found.group(1)) if found else 0.0


def test_end_keeps_the_connection_for_the_next_session_whose_hello_is_checked_again(serve, stack):
    server = serve(api_keys=["right-key"])
    assert stack.stub.Transports(pb.TransportsRequest(), timeout=10).session_socket_keep_s == session_socket.KEEP_S
    before = sessions_counted(stack)
    raw = Raw(server.sessions.port, pb.SessionSocketHello(api_key="right-key"))
    for x0 in (np.array([0.5, -0.3, 1.2]), np.array([1.1, 0.4])):  # two sessions, other shapes, one connection
        opened = raw.open(x0)
        assert np.isclose(unarr(opened.value)[0], rosenbrock(x0), rtol=1e-14)
        x = x0 + 0.25
        raw.send(pb.SessionRequest(ask=pb.SessionAsk(id=3, kind=pb.SESSION_GRADIENT, x=arr(x))))
        np.testing.assert_allclose(unarr(raw.receive().answer.gradient), rosenbrock_gradient(x), rtol=1e-13)
        raw.send(END)
        assert raw.receive().WhichOneof("message") == "ended"
        raw.send(pb.SessionSocketHello(api_key="right-key"))
    raw.send(END)  # a session with no `open` is refused as the first one would be, and the connection ends
    answer = raw.refused()
    assert answer.status == 422 and "`open`" in answer.error.message
    raw = Raw(server.sessions.port, pb.SessionSocketHello(api_key="right-key"))
    raw.open(np.zeros(2))
    raw.send(END)
    assert raw.receive().WhichOneof("message") == "ended"
    raw.send(pb.SessionSocketHello(api_key="wrong"))  # each session's hello is checked
    answer = raw.refused()
    assert answer.status == 401 and answer.error.code == "unauthorized"
    raw.close()
    assert sessions_counted(stack) - before == 3, "each session counted once, as it ends"


def test_grpc_session_end_is_answered_ended_and_the_stream_completes(stack):
    responses = list(stack.stub.Session(iter([
        pb.SessionRequest(open=pb.SessionOpen(function=fn(ROSEN), at={"x": arr(np.ones(3))}, wrt=["x"])), END,
        pb.SessionRequest(ask=pb.SessionAsk(kind=pb.SESSION_GRADIENT, x=arr(np.ones(3))))]), timeout=30))
    assert [r.WhichOneof("message") for r in responses] == ["opened", "ended"]  # nothing after `end`


@pytest.mark.parametrize("transport", ["grpc", "socket"])
def test_an_opening_answers_its_kind_at_its_point(transport, stack):
    x0 = np.array([0.7, -0.4, 1.3, 0.2])

    def opened(kind, dsl=ROSEN, at=None):
        message = pb.SessionRequest(open=pb.SessionOpen(function=fn(dsl), at={"x": arr(x0 if at is None else at)},
                                                        wrt=["x"], kind=kind))
        if transport == "grpc":
            return next(stack.stub.Session(iter([message]), timeout=30))
        raw = Raw(stack.grpc.sessions.port, pb.SessionSocketHello())
        raw.send(message)
        response = raw.receive()
        raw.close()
        return response

    answer = opened(pb.SESSION_GRADIENT).opened.answer
    assert np.isclose(unarr(answer.value)[0], rosenbrock(x0), rtol=1e-14) and answer.engine
    np.testing.assert_allclose(unarr(answer.gradient), rosenbrock_gradient(x0), rtol=1e-13)
    answer = opened(pb.SESSION_HESSIAN).opened.answer
    np.testing.assert_allclose(unarr(answer.hessian).reshape(4, 4), rosenbrock_hessian(x0), rtol=1e-13)
    np.testing.assert_allclose(unarr(answer.gradient), rosenbrock_gradient(x0), rtol=1e-13)
    answer = opened(pb.SESSION_JACOBIAN, "stack([x[0] * x[1], sin(x[1])])", np.array([0.3, 1.1])).opened.answer
    np.testing.assert_allclose(unarr(answer.jacobian).reshape(2, 2), [[1.1, 0.3], [0, np.cos(1.1)]], rtol=1e-15)
    plain = opened(pb.SESSION_VALUE).opened
    assert not plain.HasField("answer") and np.isclose(unarr(plain.value)[0], rosenbrock(x0), rtol=1e-14)
    if transport == "socket":
        refused = opened(pb.SESSION_HVP).answer
        assert refused.status == 422 and "open.kind" in refused.error.detail_json
    else:
        import grpc

        with pytest.raises(grpc.RpcError) as e:
            opened(pb.SESSION_HVP)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "direction" in e.value.details()


def test_a_kept_connection_gives_its_slot_to_a_new_one_and_ends_at_its_keep_time(serve):
    server = serve(grpc_threads=1)
    kept = Raw(server.sessions.port, pb.SessionSocketHello())
    kept.open(np.zeros(2))
    kept.send(END)
    assert kept.receive().WhichOneof("message") == "ended"
    new = Raw(server.sessions.port, pb.SessionSocketHello())  # the only slot is the kept connection's
    assert np.isclose(unarr(new.open(np.ones(2)).value)[0], 0.0)
    assert kept.receive() is None, "the kept connection was closed for it"
    new.send(END)
    assert new.receive().WhichOneof("message") == "ended"
    server.sessions.keep_s = 0.3
    t0 = time.monotonic()
    other = Raw(server.sessions.port, pb.SessionSocketHello())  # the slot again (at once)
    other.open(np.zeros(2))
    other.send(END)
    assert other.receive().WhichOneof("message") == "ended" and other.receive() is None  # at its keep time
    assert time.monotonic() - t0 < 5
    for raw in (kept, new, other):
        raw.close()


def local_port(session) -> int:
    return session._socket.getsockname()[1]


def test_the_sdk_keeps_one_connection_and_opens_anew_when_it_was_lost(serve):
    server = serve()
    x = np.array([0.3, -0.2, 0.9])
    with GrpcClient(f"127.0.0.1:{server.port}", timeout=30, session_transport="socket", session_timeout=0.5) as c:
        ports = []
        for x0 in (np.zeros(3), np.ones(3), np.zeros(2)):
            with c.session(ROSEN, {"x": x0}) as s:
                ports.append(local_port(s))
                np.testing.assert_allclose(s.gradient(x[:x0.size]), rosenbrock_gradient(x[:x0.size]), rtol=1e-13)
        assert len(set(ports)) == 1 and len(c.kept_connections) == 1

        for connection in list(server.sessions.open):  # dropped by the server (as at its keep time)
            connection.close()
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:
            assert local_port(s) != ports[0]
            np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
            ports.append(local_port(s))

        s = c.session(ROSEN, {"x": np.zeros(3)})  # refused at its deadline while idle: that connection ends
        time.sleep(1.0)
        s.close()
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:
            assert local_port(s) != ports[-1]
            np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
            ports.append(local_port(s))

        s = c.session(ROSEN, {"x": np.zeros(3)})
        assert local_port(s) == ports[-1]

        def interrupted():
            raise KeyboardInterrupt

        s._receive = interrupted  # the ask is sent, its answer never read
        with pytest.raises(KeyboardInterrupt):
            s.gradient(np.ones(3))
        s.close()
        assert len(c.kept_connections) == 0, "a connection with an answer owed is closed, not kept"
        with c.session(ROSEN, {"x": np.zeros(3)}) as s:  # not answered with the stale answer
            assert local_port(s) != ports[-1]
            np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
    assert len(c.kept_connections) == 0, "a closed client keeps nothing"


def test_without_a_keep_time_the_sdk_closes_each_connection_as_before(serve):
    """A server that keeps no connections (``session_socket_keep_s`` 0, as before it could) is never sent
    ``end``: each session closes its connection, and the next opens a new one."""
    server = serve()
    x = np.array([0.3, -0.2, 0.9])
    with GrpcClient(f"127.0.0.1:{server.port}", timeout=30, session_transport="socket") as c:
        c._socket_port()
        c.kept_connections.keep_s = 0.0  # as an older server's Transports says
        ports = []
        for _ in range(2):
            with c.session(ROSEN, {"x": np.zeros(3)}) as s:
                ports.append(local_port(s))
                np.testing.assert_allclose(s.gradient(x), rosenbrock_gradient(x), rtol=1e-13)
            assert len(c.kept_connections) == 0
        assert ports[0] != ports[1]
