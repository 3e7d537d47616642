"""The session socket: the gRPC ``Session`` on a plain TCP connection, for round trips gRPC cannot reach.

Why it exists: on loopback, grpcio's own floor for one message each way on an
open bidirectional stream (no work, sync or asyncio server) is 100-150 µs here,
while issue 12 asks for a whole small gradient in 150 µs; a length-prefixed
frame each way on a TCP connection with a blocking reader costs about 12 µs.

The messages are the ``Session``'s own, framed as a 4-byte little-endian length
then the bytes: the client sends ``SessionSocketHello`` (what gRPC carries as
metadata and deadline), then ``SessionRequest``s; the server answers with
``SessionResponse``s, in order. ``session.serve`` runs the conversation, as it
does for gRPC, so opening, asks, refusals that keep the session open, the
dispatcher's deadline and inline policy, metrics (transport ``socket``) and
the access log line are the same code. The socket adds what gRPC did for it:

* the API key and rate limit (``AccessControl.check``, once per session as
  per gRPC call; each ask counts against the rate limit too, ``charge``: the
  SDK pipelines its unary calls here), and the hello within ``http_header_timeout_s``; a frame
  where a hello is due that is not one (a request) is refused (422);
* a frame over ``grpc_max_message_bytes`` is refused (413) before it is read;
  from its first byte a frame must arrive whole within ``http_body_timeout_s``
  (a deadline per frame, not per read: a byte now and then holds no slot);
* the session's deadline (the hello's ``timeout_s``): past it the next read
  ends the session with 504; nothing asked for ``IDLE_S`` ends it with 408;
* at most ``grpc_threads`` connections at once (a thread each: a blocking read
  is the fastest way to the next ask); one more takes the slot of a kept
  connection with no session (below), or is refused with 503.

A refusal that ends the session is one ``answer`` with ``error`` and
``status``, then the connection is closed. Stopping the server closes every
connection, so a client sees the end at once rather than at its timeout.

A session ended by ``end`` (answered ``ended``) keeps its connection: the same
thread waits up to ``KEEP_S`` (``Transports`` says so) for the next session's
hello, whose key and deadline are checked as the first's were. An optimiser
opening one short session after another then pays no TCP connect, thread start
and teardown per session (about 0.3 ms of a 0.6 ms opening, measured). A kept
connection with no session holds a slot, but gives it up to a new connection
when all are taken; it ends without a word at ``KEEP_S`` (its client opens again
on a new connection when it finds it closed).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import struct
import threading
import time

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from derivd.errors import DeadlineExceeded, DerivdError, LimitExceeded, ValidationFailed
from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api import session
from derivd.grpc_api.servicer import INTERNAL, Call

log = logging.getLogger("derivd.grpc")

FRAME = struct.Struct("<I")
# A session with nothing asked for this long is ended (408), so that a client gone silent does not hold
# one of the ``grpc_threads`` slots for good: gRPC's own sessions end with their connection's age
# (``server.MAX_CONNECTION_AGE_MS``, 5 minutes), the same bound.
IDLE_S = 300.0
# How long a connection is kept after a session's ``end`` for the next session's hello.
KEEP_S = 30.0
# How long a new connection waits for the slot of a kept connection told to give it up.
EVICT_WAIT_S = 1.0
READ_BYTES = 1 << 20  # read at a time: a frame's memory grows with the bytes that came, not its claim
HELLO_FIELDS = pb.SessionSocketHello.DESCRIPTOR.fields_by_number


class _Ended(Exception):
    """``context.abort``: the conversation is over; its error is in the trailing metadata."""


class _Context:
    """What ``session.serve`` and ``Call`` ask of a gRPC context, for one socket session."""

    def __init__(self, peer: tuple, hello: pb.SessionSocketHello):
        host, port = peer[:2]
        self._peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self._metadata = [("x-request-id", hello.request_id)] if hello.request_id else []
        self.deadline = time.monotonic() + hello.timeout_s if hello.timeout_s > 0 else None
        self.trailing: list = []

    def invocation_metadata(self):
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = list(metadata)

    def abort(self, code, details):
        raise _Ended(details)


class _Connection:
    """One client's frames: read with the limits above, written whole."""

    def __init__(self, conn: socket.socket, settings):
        self.conn, self.settings = conn, settings
        self.reader = conn.makefile("rb")

    def read(self, message, timeout: float | None, limit: str = "http_body_timeout_s"):
        """The next frame as ``message``, or None when the client closed the connection between frames;
        ``TimeoutError`` when no frame began within ``timeout`` seconds (the caller says what that means).
        From its first byte the whole frame must arrive within the setting ``limit``: a deadline for the
        frame, not for each read, so that a client sending a byte now and then cannot hold a slot for good."""
        self.conn.settimeout(timeout)
        ready = self.reader.peek(1)
        if not ready:
            return None
        size = FRAME.unpack_from(ready)[0] if len(ready) >= FRAME.size else None
        if size is not None and size <= self.settings.grpc_max_message_bytes and len(ready) >= FRAME.size + size:
            body = memoryview(self.reader.read(FRAME.size + size))[FRAME.size:]  # all here: nothing to wait for
        else:
            deadline = time.monotonic() + getattr(self.settings, limit)
            (size,) = FRAME.unpack(self._exactly(FRAME.size, deadline, "a frame's length", limit))
            if size > self.settings.grpc_max_message_bytes:
                raise LimitExceeded(f"a frame of {size} bytes is over the limit of "
                                    f"{self.settings.grpc_max_message_bytes} (grpc_max_message_bytes)",
                                    limit="grpc_max_message_bytes", value=size)
            body = self._exactly(size, deadline, "a frame", limit)
        try:
            return message.FromString(body)
        except DecodeError:
            raise _not_a(message) from None

    def _exactly(self, size: int, deadline: float, what: str, limit: str) -> bytearray:
        """``size`` bytes, read as they come until ``deadline`` (past it: 408 naming the setting ``limit``);
        held in memory as they come, not as many as a frame claims before they do."""
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                self.conn.settimeout(left)
                chunk = self.reader.read1(min(size - len(data), READ_BYTES))
            except TimeoutError:
                raise DerivdError(f"{what} ({size} bytes) did not arrive within {limit} "
                                  f"({getattr(self.settings, limit):g} s); {len(data)} came",
                                  code="request_timeout", status=408) from None
            if not chunk:
                raise ValidationFailed(f"the connection ended inside {what} ({len(data)} of {size} bytes)",
                                       field="frame")
            data += chunk
        return data

    def requests(self, context: _Context):
        """``SessionRequest``s until the client closes; each waited for until the session's deadline, and
        at most ``IDLE_S``."""
        while True:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded("the session ran past its deadline", deadline_s=0)
            wait = IDLE_S if remaining is None else min(remaining, IDLE_S)
            try:
                message = self.read(pb.SessionRequest, wait)
            except TimeoutError:
                if wait != IDLE_S:
                    raise DeadlineExceeded("the session ran past its deadline", deadline_s=0) from None
                raise DerivdError(f"the session was idle for {IDLE_S:g} s (nothing asked); open another",
                                  code="session_idle", status=408) from None
            if message is None:
                return
            yield message

    def write(self, message) -> None:
        """Sent within ``http_body_timeout_s`` (a client that reads no answers ends its session then)."""
        data = message.SerializeToString()
        self.conn.settimeout(self.settings.http_body_timeout_s)
        self.conn.sendall(FRAME.pack(len(data)) + data)

    def refuse(self, status: int, error: pb.Error) -> None:
        """The answer that ends the session (the connection is closed after it)."""
        try:
            self.write(pb.SessionResponse(answer=pb.SessionAnswer(status=status, error=error)))
        except OSError:
            pass  # the client is gone already

    def close(self) -> None:
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.reader.close()
        self.conn.close()


def _not_a(message) -> ValidationFailed:
    return ValidationFailed(f"a frame is not a {message.DESCRIPTOR.name}: a connection's frames are a session's "
                            f"SessionSocketHello, its SessionRequests (`open` first) up to `end`, then the next "
                            f"session's SessionSocketHello", field="frame")


def _check_hello(hello: pb.SessionSocketHello) -> None:
    """Refuses ``hello`` when it is another message that parsed as one (an `open`'s bytes as ``api_key``, an
    `ask`'s as ``request_id``, an `end` as a field of the wrong type: a client that sent a request where
    a hello was due, whose session would otherwise wait for an `open` already sent), or its deadline is
    no number of seconds."""
    text = (hello.api_key, hello.request_id)  # gRPC metadata: printable ASCII
    if not all(t.isascii() and t.isprintable() for t in text) or any(
            f.field_number in HELLO_FIELDS for f in UnknownFieldSet(hello)):
        raise _not_a(hello)
    if not 0 <= hello.timeout_s < math.inf:
        raise ValidationFailed(f"hello.timeout_s must be a number of seconds >= 0 (0: no deadline), not "
                               f"{hello.timeout_s}", field="hello.timeout_s")


def _error(err: DerivdError) -> pb.Error:
    return pb.Error(code=err.code, message=err.message, detail_json=json.dumps(err.detail, default=str))


class SessionSocketServer:
    """Listens on ``host:port`` (0: a free port, then in ``.port``) beside a ``GrpcServer``."""

    def __init__(self, dispatcher, settings, access, host: str, port: int):
        self.dispatcher, self.settings, self.access = dispatcher, settings, access
        self.metrics = dispatcher.service.metrics
        try:
            self.listener = socket.create_server((host, port), family=_family(host), backlog=128)
        except OSError as e:
            raise OSError(f"the session socket cannot listen on {host}:{port} ({e.strerror}); choose another "
                          f"with DERIVD_SESSION_SOCKET_PORT, or -1 to turn it off") from None
        self.port = self.listener.getsockname()[1]
        self.slots = threading.BoundedSemaphore(settings.grpc_threads)
        self.keep_s = KEEP_S
        self.open: set[_Connection] = set()
        self.kept: set[_Connection] = set()  # between sessions: waiting for the next hello
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name="session-socket", daemon=True)

    def start(self) -> SessionSocketServer:
        self.thread.start()
        log.info("session socket listening on %s:%d", *self.listener.getsockname()[:2])
        return self

    def stop(self) -> None:
        """Stop listening and end every session (their clients see the connection close)."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        with self.lock:
            connections = list(self.open)
        for connection in connections:
            connection.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return  # stopped
            try:
                self._admit(conn, peer)
            except Exception:  # noqa: BLE001 - one connection failing (reset, no thread) is not the listener
                log.exception("a session socket connection from %s could not be served", peer[0])
                conn.close()

    def _admit(self, conn: socket.socket, peer: tuple) -> None:
        """A thread for the new connection in a free slot, or its refusal (503)."""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(conn, self.settings)
        if not self.slots.acquire(blocking=False) and not self._evict():
            connection.refuse(503, _error(DerivdError(
                f"this server has {self.settings.grpc_threads} sessions open (grpc_threads); try again "
                f"later, or use the gRPC Session", code="too_many_sessions", status=503)))
            connection.close()
            return
        with self.lock:
            self.open.add(connection)
        try:
            threading.Thread(target=self._serve, args=(connection, peer), name="session-socket-conn",
                             daemon=True).start()
        except BaseException:
            with self.lock:
                self.open.discard(connection)
            self.slots.release()
            raise

    def _evict(self) -> bool:
        """A slot for a new connection, taken from a kept connection with no session (whose thread then
        ends, as when its client closes); False when none is kept."""
        with self.lock:
            kept = next(iter(self.kept), None)
            self.kept.discard(kept)
        if kept is None:
            return False
        try:
            kept.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return self.slots.acquire(timeout=EVICT_WAIT_S)

    def _serve(self, connection: _Connection, peer: tuple) -> None:
        try:
            while self._converse(connection, peer) and self._next_session(connection):
                pass
        except OSError:
            pass  # the client went away, or the server is stopping
        finally:
            with self.lock:
                self.open.discard(connection)
                self.kept.discard(connection)
            self.slots.release()  # before the client sees the connection end: it may connect again at once
            connection.close()

    def _next_session(self, connection: _Connection) -> bool:
        """Whether the next session's first byte arrived on a kept connection within ``keep_s`` (else, or
        when the connection was given up for a new one, it ends without a word)."""
        try:
            connection.conn.settimeout(self.keep_s)
            arrived = bool(connection.reader.peek(1))
        except TimeoutError:
            arrived = False
        with self.lock:
            if connection not in self.kept:
                return False  # given up for a new connection (``_evict``), even if a hello came meanwhile
            self.kept.discard(connection)
        return arrived

    def _converse(self, connection: _Connection, peer: tuple) -> bool:
        """One session; whether it ended with ``end`` (the connection kept for another)."""
        try:
            try:
                hello = connection.read(pb.SessionSocketHello, self.settings.http_header_timeout_s,
                                        "http_header_timeout_s")
            except TimeoutError:
                raise DerivdError(f"no SessionSocketHello within http_header_timeout_s "
                                  f"({self.settings.http_header_timeout_s:g} s)", code="request_timeout",
                                  status=408) from None
            if hello is None:
                return False
            _check_hello(hello)
            self.access.check(hello.api_key or None, peer[0])
        except DerivdError as e:
            if e.status in (401, 429):
                self.metrics.access_denied.labels(e.code).inc()
            connection.refuse(e.status, _error(e))
            return False
        context = _Context(peer, hello)
        call = Call(self.metrics, context, "session", transport="socket")
        # each ask is a request against the rate limit: the SDK pipelines its unary calls here
        charge = (lambda: self.access.charge(hello.api_key or None, peer[0])) if self.access.limit > 0 else None
        response = None
        try:
            try:
                for response in session.serve(self.dispatcher, self.metrics, connection.requests(context),
                                              context, call, charge):
                    if response is session.ENDED:  # kept before the client reads ``ended``: a connection
                        with self.lock:            # it opens next, finding every slot taken, may have this one
                            self.kept.add(connection)
                    connection.write(response)
                return response is session.ENDED
            except DerivdError as e:  # a frame refused, or the deadline: the call fails as gRPC's would
                call.fail(e)
            except (_Ended, OSError):  # refused by ``session.serve``; the client gone
                raise
            except Exception:
                log.exception("internal error on a session socket (request id %s)", call.request_id)
                call.fail(INTERNAL)
        except _Ended:
            error = pb.Error.FromString(dict(context.trailing)["derivd-error-bin"])
            connection.refuse(call.status, error)
        finally:
            call.finish()
        return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
