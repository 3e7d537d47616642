"""``AsyncGrpcClient``'s unary calls on pipelined session-socket connections.

Why: a unary call on ``grpc.aio`` costs the client's event loop about 400 µs
of Python, while the server's own work for a small gradient is 20-45 µs: with
50 calls in flight on a 2-core machine the client, not the server, set the
pace (2,200 gradients/s, barely above a blocking REST client's 1,700). The
server's session socket (:mod:`derivd_client.session_socket`) answers asks
that carry only the point, framed on plain TCP, and it reads its frames in
order and answers in order: so a client need not wait for an answer before it
writes the next ask. It writes each call's ask as the call comes (the asks of
one turn of the event loop in one send) and matches each answer to the oldest
ask in flight (FIFO; the echoed ids check it): 10,000-20,000 gradients/s.

What rides a pipeline: a unary call a session can express — ``evaluate``,
``gradient``, a dense ``jacobian``, ``hvp``, ``hessian``, ``taylor`` — of a
program or a stored id, without ``fd`` or ``verify``, its direction shaped as
its wrt inputs, under ``MAX_ASK_BYTES``. A pipeline is one session, opened at
the first such call's point and used by every later call with the same
function, constants, inputs' names, dtypes and shapes, values of the inputs
not differentiated, ``wrt`` and ``mode`` (what a session's opening fixes).
A function has up to ``WIDTH`` of them, another opened when the asks waiting
on each add up to ``BACKLOG_S`` of the server's time (a server answers one
connection's asks one at a time: slow asks spread over several); a client
keeps at most ``MAX_OPEN``, the least recently used retired (closed once its
asks are answered). Everything else
goes over gRPC unary, unchanged, and so does a call whose session did not
open: refused (the unary call then answers, or raises the error it would have
raised anyway), or the socket unreachable (``auto`` then stops trying, as
sessions do, unless a pipeline was opened before: a restarted server).

Answers are the unary call's: each session answer is written into the unary
method's response message and decoded by the same ``decode``; a refused ask
raises the unary call's exception (its HTTP status taken through the gRPC
status code and back, as ``to_error`` sees it: 422 arrives as 400). The server
checks the API key once per connection, as for any session, and counts each ask
against the rate limit, as it counts unary calls.
A connection that ends before their answers sends the asks in flight on it
over gRPC unary, with its ``retries`` (as any call a connection failure
stopped; with ``retries=0`` they fail with ``ConnectionFailed``); the next
call opens another. The client's ``timeout`` holds per call
(``RequestTimeout``); a call that timed out or was cancelled leaves its ask
in the FIFO, and its answer is read and dropped when it comes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict, deque

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from . import arrays, errors
from .client import OPTIONS, direction_dict, resolve_function
from .grpc_client import MODES, decode, http_status, pb
from .session_socket import CONNECT_TIMEOUT_S, FRAME, MAX_FRAME, frame, socket_host
from .stored import unknown

MAX_OPEN = 16  # connections per client
WIDTH = 4  # connections per function
# The server's compute time waiting on each of a function's connections past which another is opened: one
# connection's asks are answered one at a time, so slow ones spread over several (fast ones gain nothing:
# 50 small gradients in flight on 4 connections answer half as fast as on one, on 2 cores).
BACKLOG_S = 0.01
MAX_ASK_BYTES = 1 << 20  # a larger point goes over gRPC: it would hold up the asks behind it
KINDS = {"Evaluate": pb.SESSION_VALUE, "Gradient": pb.SESSION_GRADIENT, "Jacobian": pb.SESSION_JACOBIAN,
         "Hvp": pb.SESSION_HVP, "Hessian": pb.SESSION_HESSIAN, "Taylor": pb.SESSION_TAYLOR}
# HTTP status -> gRPC code, as the server aborts a unary call (grpc_api.convert.STATUS).
GRPC_CODE = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
             403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
             413: grpc.StatusCode.RESOURCE_EXHAUSTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
             429: grpc.StatusCode.RESOURCE_EXHAUSTED, 501: grpc.StatusCode.UNIMPLEMENTED,
             502: grpc.StatusCode.UNAVAILABLE, 503: grpc.StatusCode.UNAVAILABLE,
             504: grpc.StatusCode.DEADLINE_EXCEEDED}


def unary_status(status: int, error_code: str) -> int:
    """The status a unary call's exception carries for a refusal of HTTP ``status`` and code ``error_code``."""
    code = GRPC_CODE.get(status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL)
    return http_status(code, error_code)


class Pipelines:
    """A client's pipelines, by what their session's opening fixed (:class:`Call`'s ``key``)."""

    def __init__(self, client):
        self.client = client
        self._open: OrderedDict[_Key, list[Pipeline]] = OrderedDict()
        self._asking_port: asyncio.Future | None = None
        self._reached = False  # a pipeline opened: the socket is reachable from here
        self._loop: asyncio.AbstractEventLoop | None = None

    def __iter__(self):
        """The connections open or opening."""
        for pipes in self._open.values():
            yield from pipes

    def __len__(self) -> int:
        return sum(len(pipes) for pipes in self._open.values())

    async def answer(self, method: str, function, at, options: dict, extra: dict):
        """The unary call's answer from a pipeline; None when it is to go over gRPC."""
        if method not in KINDS or not await self._port():
            return None
        if self._loop is not asyncio.get_running_loop():  # a connection serves the event loop that opened it
            self.close()
            self._loop = asyncio.get_running_loop()
        try:
            call = Call.of(method, function, at, options, extra)
        except Exception:  # noqa: BLE001 - the unary call raises it, as it would have anyway
            return None
        if call is None:
            return None
        async def asked():
            pipe = await self._pipeline(call)
            return pipe, None if pipe is None else await pipe.ask(call)

        try:
            pipe, answer = await asyncio.wait_for(asked(), self.client.timeout)
        except asyncio.TimeoutError:
            raise errors.RequestTimeout(f"no answer on the session socket within the deadline "
                                        f"({self.client.timeout:g} s)", "timeout") from None
        except errors.ConnectionFailed:  # the connection ended before the answer: a retry, as of any call a
            if not self.client.retries:  # connection failure stopped, is the unary call's
                raise
            return None
        return None if pipe is None else pipe.result(method, answer)

    async def _port(self) -> int:
        """The session socket's port where ``session_transport`` lets unary calls use it, else 0: the
        server asked once, as for sessions (a failure to answer is the unary call's to raise)."""
        client = self.client
        if client.session_transport == "grpc":
            return 0
        if client._session_port is None:
            if self._asking_port is None:
                self._asking_port = asyncio.ensure_future(client._socket_port())
            asking = self._asking_port
            try:
                await asyncio.shield(asking)
            except errors.DerivdError:
                pass
            finally:
                if self._asking_port is asking:
                    self._asking_port = None
        return client._session_port or 0

    async def _pipeline(self, call: Call) -> Pipeline | None:
        """An open pipeline for ``call``: the least loaded of its function's, another opened when each has
        ``BACKLOG_S`` of work waiting; None when none could open."""
        pipes = self._open.get(call.key)
        if pipes:
            self._open.move_to_end(call.key)
            live = [p for p in pipes if p.opened and p.closed is None]
            opening = [p for p in pipes if not p.ready.done()]
            if live:
                pipe = min(live, key=Pipeline.backlog)
                if pipe.backlog() < BACKLOG_S or opening or len(pipes) >= WIDTH:
                    return pipe
            elif opening:
                return await asyncio.shield(opening[0].ready)
        return await self._new(call)

    async def _new(self, call: Call) -> Pipeline | None:
        pipe = Pipeline(f"{socket_host(self.client.target)}:{self.client._session_port}")
        pipes = self._open.setdefault(call.key, [])
        pipes[:] = [p for p in pipes if p.closed is None]
        pipes.append(pipe)
        self._open.move_to_end(call.key)
        while len(self) > MAX_OPEN:
            for old in self._open.popitem(last=False)[1]:
                old.retire()
        pipe.ready = asyncio.ensure_future(self._opening(pipe, call, pipes))
        return await asyncio.shield(pipe.ready)

    async def _opening(self, pipe: Pipeline, call: Call, pipes: list) -> Pipeline | None:
        """``pipe`` with its session open at ``call``'s point, or None (then dropped). A function this client
        stored and the server lost is stored again, on a new connection, as a session's opening does."""
        client, current = self.client, [pipe]
        try:
            pipe = await asyncio.wait_for(self._open_again(current, call, pipes), client.timeout)
            self._reached = True
            return pipe
        except Exception:  # noqa: BLE001 - refused, unreachable, late: the unary call answers (or raises)
            pipe = current[0]
            if pipe.transport is None and not self._reached and client.session_transport == "auto":
                client._session_port = 0  # not reachable from here (a proxy, a firewall): gRPC from now on
            pipe.close()
            if pipe in pipes:
                pipes.remove(pipe)
            return None

    async def _open_again(self, current: list, call: Call, pipes: list) -> Pipeline:
        """``current[0]`` opened; a function this client stored and the server lost is stored again, on a new
        connection (then in ``current[0]``)."""
        client, pipe = self.client, current[0]
        try:
            await pipe.open(client, call)
        except errors.NotFound as e:
            if not unknown(e, client.stored_functions):
                raise
            pipe.close()
            again = Pipeline(pipe.where)
            again.ready = pipe.ready
            pipes[pipes.index(pipe)] = current[0] = pipe = again
            await pipe.open(client, call)  # with the program and constants: stored again
        return pipe

    def close(self) -> None:
        for pipes in self._open.values():
            for pipe in pipes:
                pipe.close()
        self._open.clear()


class _Key:
    """What a session's opening fixes: ``head`` (hashed: the function, the inputs' names, dtypes and shapes,
    wrt, mode) and ``data`` (the bytes of constants and inputs not differentiated, compared and not
    hashed: hashing 160 kB costs ~100 µs, comparing them ~10 µs)."""

    __slots__ = ("head", "data", "_hash")

    def __init__(self, head: tuple, data: tuple):
        self.head, self.data, self._hash = head, data, hash(head)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self.head == other.head and self.data == other.data


class Call:
    """A unary call as a session's opening and ask: its key, its flat point and direction."""

    __slots__ = ("key", "kind", "function", "at", "options", "wrt", "shapes", "x", "v", "order")

    @classmethod
    def of(cls, method: str, function, at, options: dict, extra: dict) -> Call | None:
        """The call, or None when a session cannot express it (fd, verify, a sparse Jacobian, a black box,
        a direction not shaped as the wrt inputs, wrt naming what ``at`` lacks, a large point)."""
        if options.get("fd") or options.get("verify") or extra.get("sparse"):
            return None
        at, options = dict(at or {}), dict(options)
        for name in list(options):
            if name not in OPTIONS:
                at[name] = options.pop(name)
        spec, constants = resolve_function(function, at, dict(options.get("constants") or {}))
        wrt, mode = list(options.get("wrt") or at), options.get("mode") or ""
        values = {name: arrays.as_array(value) for name, value in at.items()}
        if "blackbox" in spec or len(spec) != 1 or (mode and mode not in MODES) or not wrt or \
                len(set(wrt)) != len(wrt) or not set(wrt) <= set(values):
            return None
        constants = {name: arrays.as_array(value) for name, value in sorted(constants.items())}
        fixed = [name for name in sorted(values) if name not in wrt]
        head = (*spec.items(), mode, tuple(wrt), *((name, a.dtype.str, a.shape) for name, a in sorted(values.items())),
                "constants", *((name, a.dtype.str, a.shape) for name, a in constants.items()))
        data = (*(values[name].tobytes() for name in fixed), *(a.tobytes() for a in constants.values()))
        self = cls()
        self.key, self.kind = _Key(head, data), KINDS[method]
        self.function, self.at, self.options = function, at, options
        self.wrt, self.shapes, self.order = wrt, [values[name].shape for name in wrt], extra.get("order", 0)
        self.x, self.v = _flat([values[name] for name in wrt]), None
        if "v" in extra:
            v = direction_dict(extra["v"], wrt)
            v = {name: np.asarray(d, dtype=np.float64) for name, d in v.items()}
            if set(v) != set(wrt) or any(v[name].shape != shape for name, shape in zip(wrt, self.shapes)):
                return None
            self.v = _flat([v[name] for name in wrt])
        if type(self.order) is not int or len(self.x.data) + (len(self.v.data) if self.v else 0) > MAX_ASK_BYTES:
            return None
        return self


def _flat(parts: list[np.ndarray]) -> pb.Array:
    data = b"".join(np.ascontiguousarray(p, dtype="<f8").tobytes() for p in parts)
    return pb.Array(shape=[len(data) // 8], data=data, dtype="float64")


class Pipeline(asyncio.Protocol):
    """One session on the session socket, its asks pipelined: each written as it comes, the answers
    matched to the asks in order."""

    def __init__(self, where: str):
        self.where = where
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future | None = None  # this pipeline, or another, once opened; None if not
        self.opened = False
        self.closed: str | None = None  # why the connection ended
        self.retiring = False
        self.pending: deque[tuple[int, asyncio.Future]] = deque()  # (ask id, its answer), oldest first
        self.wrt: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self.out_shape: tuple[int, ...] = ()
        self._opening: asyncio.Future | None = None
        self.ask_seconds = 0.0  # the server's compute time per ask, a moving average
        self._buffer = bytearray()
        self._outbox: list[bytes] = []  # asks to write at the end of this turn of the event loop
        self._ids = 0

    def backlog(self) -> float:
        """The server's seconds of work waiting here, by the recent asks' compute time."""
        return len(self.pending) * self.ask_seconds

    # ------------------------------------------------------------ opening, asking, closing

    async def open(self, client, call: Call) -> None:
        """Connect, say hello and open ``call``'s function at its point; a refusal raised as the error it is."""
        loop = asyncio.get_running_loop()
        host, port = self.where.rsplit(":", 1)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self, host, int(port)), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as e:
            raise errors.ConnectionFailed(f"cannot reach the session socket at {self.where}: {e or 'timed out'}",
                                          "connection_failed") from None
        named = []

        def naming(spec: dict, constants: dict):  # by its stored id when this client stored it (stored.py)
            named.append(client.stored_functions.opening(spec, constants))
            return named[0]

        fields, _ = client._fields(call.function, call.at, dict(call.options), opening=naming)
        self._opening = loop.create_future()
        hello = pb.SessionSocketHello(api_key=client.api_key or "")
        self.transport.write(frame(hello) + frame(pb.SessionRequest(open=pb.SessionOpen(**fields))))
        response = await self._opening
        if response.WhichOneof("message") != "opened":
            raise _refusal(response.answer)
        client.stored_functions.remember(named[0], response.opened.function_id)
        self.wrt, self.shapes, self.out_shape = call.wrt, call.shapes, tuple(response.opened.out_shape)
        self.opened = True

    def ask(self, call: Call) -> asyncio.Future:
        """Write ``call``'s ask; its answer (a ``SessionAnswer``) comes in the future returned."""
        if self.closed is not None:
            raise errors.ConnectionFailed(self.closed, "connection_failed")
        self._ids += 1
        answer = asyncio.get_running_loop().create_future()
        self.pending.append((self._ids, answer))
        ask = pb.SessionAsk(id=self._ids, kind=call.kind, x=call.x, order=call.order)
        if call.v is not None:
            ask.v.CopyFrom(call.v)
        if not self._outbox:
            answer.get_loop().call_soon(self._flush)
        self._outbox.append(frame(pb.SessionRequest(ask=ask)))
        return answer

    def _flush(self) -> None:
        """The asks of one turn of the event loop in one write: a send costs ~40 µs on loopback, most of a
        small ask's cost to the client (the server reads frames from a buffer, however they arrive)."""
        if self.closed is None:
            self.transport.write(b"".join(self._outbox))
        self._outbox.clear()

    def retire(self) -> None:
        """Close once the asks in flight are answered (no new ones are given to it)."""
        self.retiring = True
        if not self.pending:
            self.close()

    def close(self) -> None:
        self._end(f"the session socket at {self.where} was closed by this client")

    # ------------------------------------------------------------ the answer as the unary call's

    def result(self, method: str, answer: pb.SessionAnswer):
        if answer.HasField("error"):
            raise _refusal(answer)
        return decode(RESPONSES[method](self, answer))

    def split(self, flat: pb.Array) -> dict[str, pb.Array]:
        """A flat answer as {wrt name: array shaped as that input}, as the unary response's map."""
        out, start = {}, 0
        for name, shape in zip(self.wrt, self.shapes):
            end = start + 8 * math.prod(shape)
            out[name] = pb.Array(shape=shape, data=flat.data[start:end], dtype="float64")
            start = end
        return out

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= FRAME.size and self.closed is None:
            (size,) = FRAME.unpack_from(buffer, start)
            if size > MAX_FRAME:
                self._end(f"{self.where} did not answer as a session socket (a frame of {size} bytes)")
                return
            end = start + FRAME.size + size
            if len(buffer) < end:
                break
            self._received(bytes(buffer[start + FRAME.size:end]))
            start = end
        del buffer[:start]

    def connection_lost(self, exc) -> None:
        self._end(f"the session socket at {self.where} closed" + (
            f": {exc}" if exc else " (the server stopped, or ended the session)"))

    def _received(self, body: bytes) -> None:
        try:
            response = pb.SessionResponse.FromString(body)
        except DecodeError:  # not a derivd session socket at that port
            self._end(f"{self.where} did not answer as a session socket")
            return
        if self._opening is not None and not self._opening.done():
            self._opening.set_result(response)
            return
        answer = response.answer
        if not self.pending or answer.id != self.pending[0][0]:  # the refusal that ends the session (id 0)
            self._end(f"the session socket at {self.where} ended the session: [{answer.status} "
                      f"{answer.error.code}] {answer.error.message}")
            return
        _, future = self.pending.popleft()
        self.ask_seconds += 0.2 * (answer.timing.compute_ms / 1e3 - self.ask_seconds)
        if not future.done():  # else its call timed out or was cancelled: the answer is dropped
            future.set_result(answer)
        if self.retiring and not self.pending:
            self.close()

    def _end(self, why: str) -> None:
        """The connection is over: each call waiting on it fails with ``ConnectionFailed`` (its own)."""
        if self.closed is None:
            self.closed = why
        for _, future in self.pending:
            if not future.done():
                future.set_exception(errors.ConnectionFailed(self.closed, "connection_failed"))
        self.pending.clear()
        if self._opening is not None and not self._opening.done():
            self._opening.set_exception(errors.ConnectionFailed(self.closed, "connection_failed"))
        if self.transport is not None:
            self.transport.close()


def _refusal(answer: pb.SessionAnswer) -> errors.DerivdError:
    """A session's refusal as the unary call's exception (its status through gRPC's code)."""
    e = answer.error
    detail = json.loads(e.detail_json) if e.detail_json else {}
    return errors.from_response(unary_status(answer.status, e.code), {"error": {"code": e.code, "message": e.message,
                                                                        "detail": detail}})


def _scalar(a: pb.Array) -> float:
    return float(np.frombuffer(a.data, dtype="<f8")[0])


# The unary method's response message from a session's answer, field by field (``convert.fill`` on the server).
RESPONSES = {
    "Evaluate": lambda p, a: pb.EvaluateResponse(value=pb.Array(shape=p.out_shape, data=a.value.data,
                                                                dtype="float64"), engine=a.engine, timing=a.timing),
    "Gradient": lambda p, a: pb.GradientResponse(value=_scalar(a.value), gradient=p.split(a.gradient),
                                                 engine=a.engine, timing=a.timing),
    "Jacobian": lambda p, a: pb.JacobianResponse(value=a.value, jacobian=a.jacobian, shape=a.jacobian.shape,
                                                 engine=a.engine, timing=a.timing),
    "Hvp": lambda p, a: pb.HvpResponse(value=_scalar(a.value), hvp=p.split(a.hvp), engine=a.engine, timing=a.timing),
    "Hessian": lambda p, a: pb.HessianResponse(value=_scalar(a.value), gradient=p.split(a.gradient),
                                               hessian=a.hessian, engine=a.engine, timing=a.timing),
    "Taylor": lambda p, a: pb.TaylorResponse(coefficients=a.coefficients, value=a.value, engine=a.engine,
                                             timing=a.timing),
}
