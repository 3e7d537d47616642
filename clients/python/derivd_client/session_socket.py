"""The session on the server's session socket: the gRPC ``Session``'s messages on a plain TCP connection.

Why: a round trip on an open gRPC stream costs grpcio 100-150 µs on loopback
before any work; the same messages framed by a 4-byte little-endian length on
a TCP connection cost about 12 µs, which is what an optimiser's loop of small
gradients needs. ``GrpcClient.session`` opens one when the server offers it
(its ``Transports`` method names the port) and the channel is not secure (the
socket is plaintext): ``session_transport="auto"``, the default. The methods,
answers, errors and counts are the gRPC session's (:mod:`derivd_client.session`).

The client sends ``SessionSocketHello`` (the API key, the session's deadline),
then ``SessionRequest``s; the server answers ``SessionResponse``s in order. A
refusal that ends the session (a wrong key, the deadline) is an answer with an
error, raised as such; a connection that closes (the server stopped) is
``ConnectionFailed``; no answer within the client's ``timeout`` is ``RequestTimeout``.

``auto`` falls back to gRPC when the port cannot be reached from here (behind a
proxy or a Kubernetes Service only gRPC's port is forwarded; a dropped
connection attempt costs ``CONNECT_TIMEOUT_S`` once per client), or when what
answers there is not a session socket.

Where the server keeps connections (``Transports.session_socket_keep_s``),
closing a session sends ``end`` and keeps its connection in the client's
:class:`KeptConnections`; the next session writes its hello and opening there
in one write and reads the previous ``ended`` before its ``opened``. An
optimiser that opens one short session after another (``scipy.minimize`` in a
loop) then pays no TCP connect, and the server no thread start and teardown:
about half of a 0.6 ms opening, measured. A connection that was not left clean
(an answer not read: a timeout, an interruption) is closed instead; a kept one
the server closed meanwhile (its keep time, a session's refusal) fails the
opening before any answer to it, which is then made on a new connection.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from google.protobuf.message import DecodeError

from . import errors
from ._grpc import derivd_pb2 as pb
from .session import _Stream

FRAME = struct.Struct("<I")
CONNECT_TIMEOUT_S = 2.0
# The largest answer read (the server's own cap on what it sends is gRPC's message limit, 64 MiB by
# default): a length past it is not a session socket talking (an HTTP server's "HTTP" reads as 1.3 GB),
# refused before a buffer that size is allocated.
MAX_FRAME = 1 << 30
MAX_KEPT = 4  # connections a client keeps between sessions (one per thread opening sessions at once)
# A kept connection is used only this fraction into the server's keep time (it closes them at the end).
KEEP_MARGIN = 0.5


def frame(message) -> bytes:
    """A message as the session socket carries it: its length, then its bytes."""
    data = message.SerializeToString()
    return FRAME.pack(len(data)) + data


END = frame(pb.SessionRequest(end=pb.SessionEnd()))  # ends a session, keeping its connection


def socket_host(target: str) -> str | None:
    """The host of a plain ``host:port`` gRPC target (None for a name resolver's target, e.g. ``dns:///``)."""
    if "/" in target or target.startswith("unix:"):
        return None
    host, sep, _ = target.rpartition(":")
    return host.strip("[]") if sep and host else None


class KeptConnections:
    """A client's session-socket connections between sessions (each ``end``ed, its ``ended`` not yet
    read): the next session opens on one instead of connecting. ``keep_s`` is the server's keep time
    (0: it keeps none, and neither does this)."""

    def __init__(self):
        self.keep_s = 0.0
        self._lock = threading.Lock()
        self._kept: list[tuple[float, socket.socket, object]] = []  # (when kept, socket, its reader)

    def take(self):
        """A kept (socket, reader) young enough to use, or None."""
        while True:
            with self._lock:
                if not self._kept:
                    return None
                kept_at, sock, reader = self._kept.pop()
            if time.monotonic() - kept_at < KEEP_MARGIN * self.keep_s:
                return sock, reader
            _shut(sock, reader)

    def give(self, sock: socket.socket, reader) -> None:
        with self._lock:
            if len(self._kept) < MAX_KEPT:
                self._kept.append((time.monotonic(), sock, reader))
                return
        _shut(sock, reader)

    def __len__(self) -> int:
        return len(self._kept)

    def close(self) -> None:
        """Close the kept connections; sessions still open close theirs when they end."""
        with self._lock:
            self.keep_s, (kept, self._kept) = 0.0, (self._kept, [])
        for _, sock, reader in kept:
            _shut(sock, reader)


def _shut(sock: socket.socket, reader) -> None:
    reader.close()
    sock.close()


class SocketSession(_Stream):
    """A ``Session`` on the session socket at ``(host, port)``: one frame each way per call."""

    def __init__(self, client, function, at: dict, options: dict, host: str, port: int,
                 opening: str | None = None):
        message = self._setup(client, function, at, options, opening)
        self._where, self._kept, self._socket = f"{host}:{port}", client.kept_connections, None
        hello = self._pb.SessionSocketHello(api_key=client.api_key or "", timeout_s=client.session_timeout or 0)
        first = frame(hello) + frame(message)
        kept = self._kept.take()
        if kept is not None:
            self._socket, self._reader = kept
            try:
                self._open(first, ended=True)
                return
            except errors.ConnectionFailed:  # closed by the server since: open on a new connection
                self._shut()
            except BaseException:
                self._shut()
                raise
        self._connect(host, port, client.timeout)
        try:
            self._open(first, ended=False)
        except BaseException:
            self._shut()
            raise

    def _connect(self, host: str, port: int, timeout: float) -> None:
        try:
            self._socket = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as e:
            raise errors.ConnectionFailed(f"cannot reach the session socket at {host}:{port}: {e}",
                                          "connection_failed") from None
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.settimeout(timeout)
        self._reader = self._socket.makefile("rb")

    def _open(self, first: bytes, ended: bool) -> None:
        """Send the hello and the opening in one write; read the last session's ``ended`` first (on a kept
        connection: ``ended``), then ``opened`` (or the refusal, raised)."""
        self._clean = False
        self._write(first)
        if ended and self._receive().WhichOneof("message") != "ended":  # the last session was refused
            raise self._gone(None)
        response = self._receive()
        if response.WhichOneof("message") != "opened":
            self._answer(response)  # the refusal, raised
        self._opened(response)
        self._clean = True

    def _write(self, data: bytes) -> None:
        try:
            self._socket.sendall(data)
        except OSError as e:
            raise self._gone(e) from None

    def _send(self, message) -> None:
        self._write(frame(message))

    def _receive(self):
        try:
            size = self._size(self._reader.read(FRAME.size))
            body = self._reader.read(size)
            if len(body) < size:
                raise self._gone(None)
        except TimeoutError:
            raise self._late(self._socket.gettimeout()) from None
        except OSError as e:
            raise self._gone(e) from None
        return self._parse(body)

    def _size(self, header: bytes) -> int:
        """A frame's length from its header: the end of the connection, or a length no session socket sends,
        raised as such."""
        if len(header) < FRAME.size:
            raise self._gone(None)
        size = FRAME.unpack(header)[0]
        if size > MAX_FRAME:
            raise errors.ConnectionFailed(f"{self._where} did not answer as a session socket (a frame of "
                                          f"{size} bytes)", "connection_failed")
        return size

    def _parse(self, body: bytes):
        try:
            return self._pb.SessionResponse.FromString(body)
        except DecodeError:  # not a derivd session socket at that port (a proxy's host, say)
            raise errors.ConnectionFailed(f"{self._where} did not answer as a session socket",
                                          "connection_failed") from None

    def _late(self, timeout: float) -> errors.RequestTimeout:
        return errors.RequestTimeout(f"no answer from the session socket at {self._where} within {timeout:g} s",
                                     "timeout")

    def _gone(self, cause: OSError | None) -> errors.ConnectionFailed:
        why = f": {cause}" if cause else " (the server stopped, or ended the session)"
        return errors.ConnectionFailed(f"the session socket at {self._where} closed{why}", "connection_failed")

    def _ask(self, kind: str, x, v=None, order: int = 0) -> dict:
        self._clean = False  # until its answer is read: a connection with an answer owed is not kept
        self._send(self._message(kind, x, v, order))
        response = self._receive()
        self._clean = True
        return self._answer(response)

    def close(self) -> None:
        """End the session: with ``end``, the connection kept for the next session (where the server keeps
        them and this one is clean), else by closing it (the server sees it close between frames)."""
        if self._socket is None:
            return
        if self._clean and self._kept.keep_s > 0:
            try:
                self._socket.sendall(END)
            except OSError:
                pass
            else:
                self._kept.give(self._socket, self._reader)
                self._socket = None
                return
        self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            _shut(self._socket, self._reader)
            self._socket = None


class AsyncSocketSession(SocketSession):
    """:class:`SocketSession` for asyncio (``await AsyncGrpcClient.session(...)`` where the socket is chosen):
    the same frames on an asyncio connection, the methods coroutines; calls on one session are answered in
    order, one at a time, as on :class:`~derivd_client.session.AsyncSession`."""

    @classmethod
    async def open(cls, client, function, at: dict, options: dict, host: str, port: int) -> "AsyncSocketSession":
        import asyncio

        self = cls.__new__(cls)
        self._asyncio, self._timeout, self._where = asyncio, client.timeout, f"{host}:{port}"
        self._lock = asyncio.Lock()
        opening = self._setup(client, function, at, options)
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                                CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as e:
            raise errors.ConnectionFailed(f"cannot reach the session socket at {host}:{port}: {e or 'timed out'}",
                                          "connection_failed") from None
        self._writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket = self._writer
        try:
            hello = self._pb.SessionSocketHello(api_key=client.api_key or "", timeout_s=client.session_timeout or 0)
            response = await self._exchange(frame(hello) + frame(opening))
            if response.WhichOneof("message") != "opened":
                self._answer(response)  # the refusal, raised
            self._opened(response)
        except BaseException:
            await self.close()
            raise
        return self

    async def _exchange(self, data: bytes):
        """Send ``data`` (whole frames) and read one answer, one exchange at a time: answers match asks."""
        asyncio = self._asyncio
        async with self._lock:
            try:
                self._writer.write(data)
                size = self._size(await asyncio.wait_for(self._reader.readexactly(FRAME.size), self._timeout))
                body = await asyncio.wait_for(self._reader.readexactly(size), self._timeout)
            except asyncio.TimeoutError:
                raise self._late(self._timeout) from None
            except asyncio.IncompleteReadError:
                raise self._gone(None) from None
            except OSError as e:
                raise self._gone(e) from None
        return self._parse(body)

    async def _ask(self, kind: str, x, v=None, order: int = 0) -> dict:
        return self._answer(await self._exchange(frame(self._message(kind, x, v, order))))

    async def _request(self, kind: str, x, v=None, order: int = 0, *, post):
        return post(await self._ask(kind, x, v, order))

    async def close(self) -> None:
        if self._socket is not None:
            self._socket = None
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:  # the server closed first
                pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
