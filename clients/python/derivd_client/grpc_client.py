"""``GrpcClient``: the same calls over gRPC (``derivd.v1.Differentiator``), and streamed HVPs.

Needs the ``grpc`` extra (``pip install 'derivd-client[grpc]'``); the message
classes are the SDK's own copy generated from ``proto/derivd/v1/derivd.proto``
(``scripts/gen_proto.sh``), so the server package is never imported.

Answers come back as the REST client's :class:`~derivd_client.client.Result`
with the same keys (a sparse Jacobian under ``jacobian``, timings from the
``Timing`` message in ``.timing``), so code can switch transports freely.
Errors carry the contract's ``code``/``message``/``detail`` from the trailing
metadata ``derivd-error-bin`` and raise the same typed exceptions.
``hvp_stream`` keeps one stream open at one point: the server compiles once
and computes the gradient once, then answers each direction as it comes.
``session`` keeps one function open for requests of any kind carrying only the
point (:mod:`derivd_client.session`). ``AsyncGrpcClient`` is the unary calls for
asyncio, many in flight on one connection.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Callable, Iterable, Sized

import grpc
import numpy as np

from . import arrays, errors
from ._grpc import derivd_pb2 as pb
from ._grpc import derivd_pb2_grpc as pb_grpc
from .client import OPTIONS, Result, SparseJacobian, direction_dict, resolve_function
from .session import AsyncSession, Session
from .session_socket import AsyncSocketSession, KeptConnections, SocketSession, socket_host
from .stored import Opening, StoredFunctions, unknown

MODES = {"auto": pb.MODE_AUTO, "forward": pb.MODE_FORWARD, "reverse": pb.MODE_REVERSE,
         "taylor": pb.MODE_TAYLOR, "finite": pb.MODE_FINITE}
# gRPC status -> the HTTP status family the REST client would have seen (for the exception class).
HTTP_OF = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 502, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# gRPC codes that merge HTTP statuses, told apart by the error's own code: RESOURCE_EXHAUSTED is 413 (a limit
# on size or work) unless the error is the rate limit's.
HTTP_OF_ERROR = {"rate_limited": 429}
SESSION_TRANSPORTS = ("auto", "socket", "grpc")
WIRE = {"float64": "<f8", "float32": "<f4", "int64": "<i8", "int32": "<i4", "bool": "|b1"}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 64 * 1024


def to_message(value) -> pb.Array:
    arr = arrays.as_array(value)
    name, little = arrays.WIRE[arr.dtype.kind]
    return pb.Array(shape=list(arr.shape), dtype=name, data=np.ascontiguousarray(arr, dtype=little).tobytes())


def from_message(a: pb.Array) -> np.ndarray:
    arr = np.frombuffer(a.data, dtype=WIRE[a.dtype or "float64"]).reshape(tuple(a.shape))
    return arr.astype(arr.dtype.newbyteorder("="))


class GrpcClient:
    """``GrpcClient("127.0.0.1:50051", api_key=..., timeout=...)``; the REST client's methods, plus
    :meth:`hvp_stream`. ``credentials`` (``grpc.ssl_channel_credentials()``) makes the channel secure.
    ``session_transport`` is where :meth:`session` opens sessions: ``"auto"`` on the server's session
    socket when it offers one and the channel is not secure (else gRPC), ``"socket"`` there or an
    error, ``"grpc"`` always on gRPC."""

    channels = grpc  # the module that makes its channel: grpc.aio for AsyncGrpcClient

    def __init__(self, target: str = "127.0.0.1:50051", *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.2, credentials: grpc.ChannelCredentials | None = None,
                 session_timeout: float | None = None, session_transport: str = "auto"):
        if session_transport not in SESSION_TRANSPORTS:
            raise ValueError(f"session_transport must be one of {SESSION_TRANSPORTS}, got {session_transport!r}")
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self.target = target
        self.channel = (self.channels.secure_channel(target, credentials, options) if credentials
                        else self.channels.insecure_channel(target, options))
        self.stub = pb_grpc.DifferentiatorStub(self.channel)
        self.api_key = api_key
        self.metadata = (("x-api-key", api_key),) if api_key else ()
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.session_timeout = session_timeout  # a session's whole life (None: until closed)
        # The session socket's port, asked of the server once (0: none, or not to be used).
        self.session_transport = session_transport
        self._session_port: int | None = 0 if credentials is not None and session_transport == "auto" else None
        self.stored_functions = StoredFunctions()  # what sessions stored: opened by id from then on
        self.kept_connections = KeptConnections()  # the session socket's, between sessions

    def close(self) -> None:
        self.kept_connections.close()
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ unary calls

    def evaluate(self, function, at=None, **options):
        return self._unary("Evaluate", pb.EvaluateRequest, function, at, options)

    def gradient(self, function, at=None, **options):
        return self._unary("Gradient", pb.GradientRequest, function, at, options)

    def jacobian(self, function, at=None, *, sparse: bool = False, **options):
        return self._unary("Jacobian", pb.JacobianRequest, function, at, options, sparse=sparse)

    def jvp(self, function, at=None, *, v, **options):
        return self._unary("Jvp", pb.JvpRequest, function, at, options, v=v)

    def vjp(self, function, at=None, *, u, **options):
        return self._unary("Vjp", pb.VjpRequest, function, at, options,
                           u=to_message(np.asarray(u, dtype=np.float64).reshape(-1)))

    def hvp(self, function, at=None, *, v, **options):
        return self._unary("Hvp", pb.HvpRequest, function, at, options, v=v)

    def hessian(self, function, at=None, **options):
        return self._unary("Hessian", pb.HessianRequest, function, at, options)

    def taylor(self, function, at=None, *, v, order: int, **options):
        return self._unary("Taylor", pb.TaylorRequest, function, at, options, v=v, order=order)

    def derivatives(self, function, at=None, *, order: int, **options):
        return self._unary("Derivatives", pb.DerivativesRequest, function, at, options, order=order)

    def _request(self, message, function, at, options: dict, **extra):
        fields, names = self._fields(function, at, options)
        if "v" in extra:
            extra["v"] = _directions(extra["v"], names)
        fields.update({k: v for k, v in extra.items() if v is not None and v is not False})
        if "fd" in options and options["fd"]:
            fields["fd"] = pb.FiniteDifferences(**options["fd"])
        if options.get("verify"):
            fields["verify"] = True
        return message(**fields)

    def _unary(self, method: str, message, function, at, options: dict, **extra):
        request = self._request(message, function, at, options, **extra)
        call = getattr(self.stub, method)
        for attempt in range(self.retries + 1):
            try:
                return decode(call(request, timeout=self.timeout, metadata=self.metadata))
            except grpc.RpcError as e:
                err = to_error(e)
                if not isinstance(err, errors.ConnectionFailed) or attempt == self.retries:
                    raise err from None
                time.sleep(self.backoff * 2 ** attempt)

    def _fields(self, function, at, options: dict, opening: Callable[[dict, dict], Opening] | None = None
                ) -> tuple[dict, list[str]]:
        """The request's fields, and its wrt names; ``opening`` (a session's) may name the function by a
        stored id instead of its program and constants (:mod:`derivd_client.stored`)."""
        at = dict(at or {})
        for key in list(options):
            if key not in OPTIONS:
                at[key] = options.pop(key)
        constants = dict(options.get("constants") or {})
        spec, constants = resolve_function(function, at, constants)
        fields = {}
        if opening is not None:
            named = opening(spec, constants)
            spec, constants, fields["store"] = named.spec, named.constants, named.store
        fields.update({"function": pb.Function(**spec), "at": {k: to_message(v) for k, v in at.items()},
                       "constants": {k: to_message(v) for k, v in constants.items()}})
        # A proto map has no order, while "all of `at`, in its order" is the default wrt: name it.
        fields["wrt"] = list(options.get("wrt") or at)
        if options.get("mode"):
            fields["mode"] = MODES[options["mode"]]
        return fields, list(options.get("wrt") or at)

    # ------------------------------------------------------------ sessions and streams

    def session(self, function, at=None, *, opening: str | None = None, **options) -> Session:
        """Open a :class:`~derivd_client.session.Session`: ``function`` compiled once at the shapes of
        ``at``, then value, gradient, Jacobian, HVP, Hessian or Taylor requests at flat points; on the
        session socket (:class:`~derivd_client.session_socket.SocketSession`, the same methods) when
        ``session_transport`` chooses it. ``opening`` (``"value"``, ``"gradient"``, ``"jacobian"``,
        ``"hessian"``): the opening computes that at ``at`` too, and answers the first such call there."""
        at = dict(at or {})
        try:
            return self._session(function, at, options, opening)
        except errors.NotFound as e:
            if not unknown(e, self.stored_functions):
                raise
            return self._session(function, at, options, opening)  # with the program and constants: stored again

    def _session(self, function, at: dict, options: dict, opening: str | None) -> Session:
        port = self._socket_port()
        if port:
            try:
                return SocketSession(self, function, at, options, socket_host(self.target), port, opening)
            except errors.ConnectionFailed:
                if self.session_transport == "socket":
                    raise
                self._session_port = 0  # not reachable from here (a proxy, a firewall): gRPC from now on
        return Session(self, function, at, options, opening)

    def _socket_port(self) -> int:
        """The session socket's port to use (0: use gRPC), asked of the server on the first session (asked
        again until it answers: a failure raises, as opening would)."""
        if self._session_port is None and self.session_transport != "grpc":
            port = 0
            if socket_host(self.target) is not None:
                try:
                    transports = self.stub.Transports(pb.TransportsRequest(), timeout=self.timeout,
                                                      metadata=self.metadata)
                    port, self.kept_connections.keep_s = (transports.session_socket_port,
                                                          transports.session_socket_keep_s)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNIMPLEMENTED:  # an older server has no Transports
                        raise to_error(e) from None
            self._session_port = port
        return self._port_chosen()

    def _port_chosen(self) -> int:
        if self.session_transport == "grpc":
            return 0
        if not self._session_port and self.session_transport == "socket":
            raise errors.ConnectionFailed(f"the server at {self.target} offers no session socket (or it is not "
                                          f"reachable from here)", "connection_failed")
        return self._session_port

    def hvp_stream(self, function, at=None, directions: Iterable = (), **options) -> HvpStream:
        """Open one stream at ``at`` and yield H v for each direction, in order, as each arrives.

        ``directions`` may be any iterable, consumed lazily: a generator can compute the next
        direction from the last product (as conjugate gradients does). The returned
        :class:`HvpStream` also has ``.value`` and ``.gradient`` at the point once started."""
        fields, names = self._fields(function, at, options)
        start = pb.HvpStreamStart(**fields)
        requests = _Requests(pb.HvpStreamRequest(start=start),
                             (pb.HvpStreamRequest(direction=pb.Direction(v=_directions(v, names)))
                              for v in directions), throttle=not isinstance(directions, Sized))
        responses = self.stub.HessianVectorProducts(requests, timeout=self.timeout, metadata=self.metadata)
        return HvpStream(responses, requests)


class AsyncGrpcClient(GrpcClient):
    """The unary calls for asyncio: every method is a coroutine, many calls in flight at once
    (``async with AsyncGrpcClient(target) as c: await c.gradient(...)``). Where ``session_transport``
    chooses the session socket (as for sessions), a call a session can express (evaluate, gradient,
    Jacobian, HVP, Hessian, Taylor of a program) rides a pipelined session on it
    (:mod:`derivd_client.pipeline`: the same answers and errors, a fraction of ``grpc.aio``'s cost per
    call); any other goes over one HTTP/2 connection (``grpc.aio``). Either way concurrent requests reach
    a throughput a blocking client cannot (the README's numbers). ``session`` opens an asynchronous
    session; HVP streams are the blocking client's."""

    channels = grpc.aio

    def __init__(self, *args, **kwargs):
        from .pipeline import Pipelines

        super().__init__(*args, **kwargs)
        self.pipelines = Pipelines(self)

    async def _unary(self, method: str, message, function, at, options: dict, **extra):
        answer = await self.pipelines.answer(method, function, at, options, extra)
        if answer is not None:
            return answer
        request = self._request(message, function, at, options, **extra)
        call = getattr(self.stub, method)
        for attempt in range(self.retries + 1):
            try:
                return decode(await call(request, timeout=self.timeout, metadata=self.metadata))
            except grpc.RpcError as e:
                err = to_error(e)
                if not isinstance(err, errors.ConnectionFailed) or attempt == self.retries:
                    raise err from None
                await asyncio.sleep(self.backoff * 2 ** attempt)

    async def session(self, function, at=None, **options) -> AsyncSession | AsyncSocketSession:
        """An :class:`~derivd_client.session.AsyncSession` (or, where ``session_transport`` chooses the session
        socket, an :class:`~derivd_client.session_socket.AsyncSocketSession`): :meth:`GrpcClient.session`'s
        methods as coroutines (``s = await client.session(f, at); g = await s.gradient(x)``)."""
        try:
            return await self._session(function, dict(at or {}), options)
        except errors.NotFound as e:
            if not unknown(e, self.stored_functions):
                raise
            return await self._session(function, dict(at or {}), options)  # stored again

    async def _session(self, function, at: dict, options: dict):
        port = await self._socket_port()
        if port:
            try:
                return await AsyncSocketSession.open(self, function, at, options, socket_host(self.target), port)
            except errors.ConnectionFailed:
                if self.session_transport == "socket":
                    raise
                self._session_port = 0  # not reachable from here: gRPC from now on
        return await AsyncSession.open(self, function, at, options)

    async def _socket_port(self) -> int:
        """:meth:`GrpcClient._socket_port`, the server asked on the asyncio channel."""
        if self._session_port is None and self.session_transport != "grpc":
            port = 0
            if socket_host(self.target) is not None:
                try:
                    port = (await self.stub.Transports(pb.TransportsRequest(), timeout=self.timeout,
                                                       metadata=self.metadata)).session_socket_port
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise to_error(e) from None
            self._session_port = port
        return self._port_chosen()

    def hvp_stream(self, *args, **kwargs):
        raise TypeError("HVP streams are the blocking GrpcClient's: open one there")

    def close(self) -> None:
        raise TypeError("use `await client.aclose()` (or `async with`)")

    async def aclose(self) -> None:
        self.pipelines.close()
        await self.channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


class HvpStream:
    """An iterator of {name: H v}, one per direction, in order; ``value`` and ``gradient`` at the point are
    read when the stream opens, before any direction is pulled."""

    def __init__(self, responses, requests: _Requests):
        self._responses, self._requests = responses, requests
        self.timing: dict[str, float] = {}
        try:  # the start's answer first: value and gradient are there before any direction is pulled
            s = next(self._responses).started
        except grpc.RpcError as e:
            raise to_error(e) from None
        self.value = np.float64(s.value)
        self.gradient = {k: from_message(v) for k, v in s.gradient.items()}
        self.engine, self.timing = s.engine, _timing(s.timing)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        self._requests.answered()  # the caller is done with what came before: a lazy source may use it now
        try:
            msg = next(self._responses)
        except grpc.RpcError as e:
            raise to_error(e) from None
        return {k: from_message(v) for k, v in msg.hvp.hvp.items()}

    def cancel(self) -> None:
        self._responses.cancel()


class _Requests:
    """The stream's request iterator: the start, then the directions.

    A collection of directions is sent as fast as gRPC pulls it (the answers
    pipeline). A lazy iterable is throttled: gRPC pulls requests on its own
    thread, so each direction is pulled only when the caller asks for its
    product, i.e. once it has handled the gradient (which the stream reads
    first) and the products before; a generator can thus compute each
    direction from them (as CG does, starting from the gradient)."""

    def __init__(self, first, rest, throttle: bool):
        self._first, self._rest = first, iter(rest)
        self._turns: queue.Queue | None = queue.Queue() if throttle else None
        self._started = False

    def answered(self) -> None:
        if self._turns is not None:
            self._turns.put(True)

    def __iter__(self):
        return self

    def __next__(self):
        if not self._started:
            self._started = True
            return self._first
        if self._turns is not None:
            self._turns.get()
        return next(self._rest)


# ---------------------------------------------------------------- answers and errors

def decode(msg) -> Result:
    out = Result()
    out.timing = {}
    for fd, value in msg.ListFields():
        name = fd.name
        if name == "timing":
            out.timing = _timing(value)
            if value.tier:  # which compile tier answered, as REST's body field ``tier`` (absent: tier 2 off)
                out["tier"] = value.tier
        elif name == "verification":
            out[name] = {"max_abs_err": value.max_abs_err, "max_rel_err": value.max_rel_err, "passed": value.passed}
        elif name == "jacobian_coo":
            out["jacobian"] = SparseJacobian(np.asarray(value.rows, dtype=np.int64),
                                             np.asarray(value.cols, dtype=np.int64),
                                             from_message(value.values).reshape(-1), tuple(value.shape))
        elif name == "shape":
            out[name] = tuple(value)
        elif isinstance(value, pb.Array):
            arr = from_message(value)
            out[name] = np.float64(arr) if arr.ndim == 0 else arr
        elif fd.message_type is pb.Array.DESCRIPTOR:  # repeated: derivative tensors
            out[name] = [from_message(v) for v in value]
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[name] = {k: from_message(v) for k, v in value.items()}
        elif isinstance(value, float):
            out[name] = np.float64(value)
        else:
            out[name] = value
    return out


def http_status(code: grpc.StatusCode, error_code: str) -> int:
    """The HTTP status a refusal of gRPC ``code`` and derivd ``error_code`` had (the REST client's status)."""
    return HTTP_OF_ERROR.get(error_code) or HTTP_OF.get(code, 500)


def to_error(e: grpc.RpcError) -> errors.DerivdError:
    code = e.code()
    for key, value in e.trailing_metadata() or ():
        if key == "derivd-error-bin":
            body = pb.Error.FromString(value)
            detail = json.loads(body.detail_json) if body.detail_json else {}
            return errors.from_response(http_status(code, body.code), {"error": {
                "code": body.code, "message": body.message, "detail": detail}})
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.ConnectionFailed(f"gRPC server unavailable: {e.details()}", "connection_failed")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.RequestTimeout(f"no gRPC answer within the deadline: {e.details()}", "timeout")
    return errors.from_response(HTTP_OF.get(code, 500), {"error": {"code": code.name.lower(),
                                                                    "message": e.details() or "", "detail": {}}})


def _timing(t) -> dict[str, float]:
    return {"compile": t.compile_ms, "queue": t.queue_ms, "compute": t.compute_ms}


def _directions(v, names: list[str]) -> dict:
    return {k: to_message(np.asarray(x, dtype=np.float64)) for k, x in direction_dict(v, names).items()}
