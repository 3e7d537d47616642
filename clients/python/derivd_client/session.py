"""Function sessions: one function, one connection, many requests carrying only the point.

``GrpcClient.session(f, at, ...)`` opens a gRPC ``Session``: the server
compiles ``f`` once at the shapes of ``at``; each call then sends the
differentiated inputs as one flat vector (concatenated in ``wrt`` order) and
gets flat answers back, which is what optimisers work with::

    with client.session(f, {"x": x0}) as s:
        value, grad = s.value_and_grad(x)
        hv = s.hvp(x, v)

Every call is one round trip on the open stream (no HTTP, no JSON, no
re-sent program). ``session(f, at, opening="gradient")`` (or ``"hessian"``,
``"jacobian"``, ``"value"``) asks the opening to compute that at ``at`` too:
the session's first call of that kind at ``at`` (an optimiser's first, at its
starting point) is then answered from the opening, without a round trip.
``requests`` counts round trips and ``server_seconds`` adds up the server's
compile, queue and compute time. ``open_session(client, ...)`` gives a
session on any client: the gRPC one above, or for the REST client
``UnarySession``, the same methods over one unary request each.
``await AsyncGrpcClient.session(...)`` is an ``AsyncSession``: the same methods
as coroutines.
"""

from __future__ import annotations

import inspect
import json
import math
import queue
from collections.abc import Mapping

import numpy as np

from . import errors
from .client import OPTIONS, resolve_function
from .stored import unknown

KINDS = ("value", "gradient", "jacobian", "hvp", "hessian", "taylor")
OPENING_KINDS = ("value", "gradient", "jacobian", "hessian")  # what an opening may answer (no direction)


class _SessionBase:
    """What both kinds of session share: the flat layout of the wrt inputs, counts, ``with``."""

    wrt: list[str]
    sizes: list[int]
    shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]

    def __init__(self):
        self.requests = 0
        self.server_seconds = 0.0
        # (kind, the opening point's flat bytes, its answer): the opening's answer, for the first call
        self._first: tuple[str, bytes, dict] | None = None

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def flatten(self, x) -> np.ndarray:
        """A point as the session's flat vector: a flat array as is, or {name: array} in wrt order."""
        if isinstance(x, Mapping):
            return np.concatenate([np.asarray(x[w], dtype=np.float64).reshape(-1) for w in self.wrt])
        return np.asarray(x, dtype=np.float64).reshape(-1)

    def split(self, flat) -> dict[str, np.ndarray]:
        """A flat vector as {name: array shaped like that input}."""
        out, start = {}, 0
        flat = np.asarray(flat)
        for name, shape, size in zip(self.wrt, self.shapes, self.sizes):
            out[name] = flat[start:start + size].reshape(shape)
            start += size
        return out

    # ------------------------------------------------------------ the requests, flat in, flat out
    # Each method is ``_request(kind, ..., post)``: the answer's arrays, then ``post`` shapes them (an
    # asynchronous session awaits the answer in its ``_request``, so the same methods are coroutines there).

    def value(self, x):
        """The output at ``x`` (a float for a one-element output, else shaped like the output)."""
        return self._request("value", x, post=lambda a: self._shaped_value(a["value"]))

    def value_and_grad(self, x):
        """(f(x), the flat gradient) from one request."""
        return self._request("gradient", x, post=lambda a: (np.float64(a["value"][0]), a["gradient"]))

    def gradient(self, x):
        return self._request("gradient", x, post=lambda a: a["gradient"])

    def jacobian(self, x):
        """The m x n Jacobian at ``x`` (m: the output's size)."""
        return self._request("jacobian", x, post=lambda a: self._matrix(a["jacobian"]))

    def value_and_jacobian(self, x):
        return self._request("jacobian", x, post=lambda a: (a["value"], self._matrix(a["jacobian"])))

    def hvp(self, x, v):
        """H(x) v, flat."""
        return self._request("hvp", x, v=v, post=lambda a: a["hvp"])

    def hessian(self, x):
        """The n x n Hessian at ``x``."""
        return self._request("hessian", x, post=lambda a: a["hessian"].reshape(self.n, self.n))

    def value_grad_and_hessian(self, x):
        """(f(x), the flat gradient, the n x n Hessian) from one request: the Hessian's answer carries
        the value and gradient it computed on the way."""
        return self._request("hessian", x, post=lambda a: (
            np.float64(a["value"][0]), a["gradient"], a["hessian"].reshape(self.n, self.n)))

    def taylor(self, x, v, order: int):
        """(order + 1) x m coefficients c_k = (1/k!) d^k/dt^k f(x + t v) at t = 0."""
        return self._request("taylor", x, v=v, order=order,
                             post=lambda a: a["coefficients"].reshape(order + 1, -1))

    def _request(self, kind: str, x, v=None, order: int = 0, *, post):
        first, self._first = self._first, None
        if first is not None and first[0] == kind and v is None and self.flatten(x).tobytes() == first[1]:
            return post(first[2])  # the opening computed it
        return post(self._ask(kind, x, v, order))

    def _matrix(self, jac: np.ndarray) -> np.ndarray:
        return jac.reshape(math.prod(self.out_shape), self.n)

    def _shaped_value(self, flat: np.ndarray):
        return np.float64(flat[0]) if flat.size == 1 else flat.reshape(self.out_shape)

    def _ask(self, kind: str, x, v=None, order: int = 0) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass


class _Stream(_SessionBase):
    """The ``Session`` RPC's messages, for both kinds of call: the opening, each ask, each answer."""

    def _setup(self, client, function, at: dict, options: dict, opening: str | None = None):
        """The opening message; ``opening``: the kind of ask it also answers at ``at`` (None: none)."""
        from .grpc_client import from_message, pb, to_error, to_message

        super().__init__()
        self._pb, self._to_message, self._from_message, self._to_error = pb, to_message, from_message, to_error
        self._kinds = {name: getattr(pb, f"SESSION_{name.upper()}") for name in KINDS}
        if opening is not None and opening not in OPENING_KINDS:
            raise ValueError(f"opening must be one of {OPENING_KINDS}, got {opening!r}")
        self._ids = 0
        self._at = {**at, **{k: v for k, v in options.items() if k not in OPTIONS}}  # as ``_fields`` reads them
        self._opening_kind = opening
        self._stored, self._opening = client.stored_functions, None
        fields, _ = client._fields(function, at, dict(options), opening=self._named)
        return pb.SessionRequest(open=pb.SessionOpen(**fields, kind=self._kinds[opening or "value"]))

    def _named(self, spec: dict, constants: dict):
        """The function by its stored id when this client stored it, else asking the server to store it."""
        self._opening = self._stored.opening(spec, constants)
        return self._opening

    def _opened(self, response) -> None:
        opened = response.opened
        self.requests = 1  # the opening: the function compiled and evaluated at ``at``
        self.wrt, self.sizes = list(opened.wrt), list(opened.n)
        self.shapes = [tuple(np.shape(self._at[w])) if w in self._at else (size,)
                       for w, size in zip(self.wrt, self.sizes)]
        self.out_shape = tuple(opened.out_shape)
        self._stored.remember(self._opening, opened.function_id)
        self.opening_value = self._shaped_value(self._from_message(opened.value).reshape(-1))
        t = opened.timing
        self.timing = {"compile": t.compile_ms, "queue": t.queue_ms, "compute": t.compute_ms}
        self.server_seconds += (t.compile_ms + t.queue_ms + t.compute_ms) / 1e3
        kind = self._opening_kind
        if kind == "value" or (kind is not None and opened.HasField("answer")):  # (a server before `kind`: none)
            answer = self._arrays(opened.answer) if kind != "value" else {"value": self._from_message(opened.value)}
            self._first = (kind, self.flatten(self._at).tobytes(), answer)

    def _message(self, kind: str, x, v, order: int):
        pb = self._pb
        self._ids += 1
        ask = pb.SessionAsk(id=self._ids, kind=self._kinds[kind], x=self._to_message(self.flatten(x)), order=order)
        if v is not None:
            ask.v.CopyFrom(self._to_message(self.flatten(v)))
        return pb.SessionRequest(ask=ask)

    def _answer(self, response) -> dict:
        answer = response.answer
        self.requests += 1
        t = answer.timing
        self.server_seconds += (t.compile_ms + t.queue_ms + t.compute_ms) / 1e3
        if answer.HasField("error"):
            e = answer.error
            raise errors.from_response(answer.status, {"error": {
                "code": e.code, "message": e.message, "detail": json.loads(e.detail_json) if e.detail_json else {}}})
        return self._arrays(answer)

    def _arrays(self, answer) -> dict:
        """An answer's arrays by field name (value, gradient, ...), flat."""
        return {fd.name: self._from_message(value) for fd, value in answer.ListFields()
                if isinstance(value, self._pb.Array)}


class Session(_Stream):
    """A gRPC ``Session``: opened by :meth:`GrpcClient.session`; each call is one message each way."""

    def __init__(self, client, function, at: dict, options: dict, opening: str | None = None):
        import grpc

        self._rpc_error = grpc.RpcError
        opening = self._setup(client, function, at, options, opening)
        self._outbox: queue.Queue | None = queue.Queue()
        self._outbox.put(opening)
        self._call = client.stub.Session(iter(self._outbox.get, None), timeout=client.session_timeout,
                                         metadata=client.metadata)
        self._opened(self._next())

    def _next(self):
        try:
            return next(self._call)
        except self._rpc_error as e:
            raise self._to_error(e) from None

    def _ask(self, kind: str, x, v=None, order: int = 0) -> dict:
        self._outbox.put(self._message(kind, x, v, order))
        return self._answer(self._next())

    def close(self) -> None:
        """End the stream (the server finishes it cleanly)."""
        if self._outbox is not None:
            self._outbox.put(None)
            self._outbox = None
            for _ in self._call:  # drain to the server's end of the stream
                pass


class AsyncSession(_Stream):
    """A gRPC ``Session`` for asyncio (``await AsyncGrpcClient.session(...)``): the same methods, as
    coroutines; calls on one session are answered in order, one at a time."""

    @classmethod
    async def open(cls, client, function, at: dict, options: dict) -> "AsyncSession":
        import asyncio

        import grpc

        self = cls()
        self._rpc_error, self._eof = grpc.RpcError, grpc.aio.EOF
        self._lock = asyncio.Lock()
        opening = self._setup(client, function, at, options)
        self._call = client.stub.Session(timeout=client.session_timeout, metadata=client.metadata)
        await self._exchange(opening, self._opened)
        return self

    async def _exchange(self, message, read):
        async with self._lock:  # one message each way at a time: answers match their asks
            try:
                await self._call.write(message)
                response = await self._call.read()
            except self._rpc_error as e:
                raise self._to_error(e) from None
        if response is self._eof:
            raise errors.ConnectionFailed("the session's stream ended", "connection_failed", {})
        return read(response)

    async def _ask(self, kind: str, x, v=None, order: int = 0) -> dict:
        return await self._exchange(self._message(kind, x, v, order), self._answer)

    async def _request(self, kind: str, x, v=None, order: int = 0, *, post):
        return post(await self._ask(kind, x, v, order))

    async def close(self) -> None:
        await self._call.done_writing()
        while await self._call.read() is not self._eof:  # drain to the server's end of the stream
            pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class UnarySession(_SessionBase):
    """The session's methods over any client's unary requests (one request per call): for the REST
    client, which has no stream. A program is registered once per client and constants
    (:mod:`derivd_client.stored`), then named by its id."""

    def __init__(self, client, function, at: dict, options: dict):
        super().__init__()
        self.client = client
        options = dict(options)
        at = dict(at or {})
        for key in list(options):
            if key not in OPTIONS:
                at[key] = options.pop(key)
        constants = dict(options.pop("constants", None) or {})
        spec, constants = resolve_function(function, at, constants)
        self.wrt = list(options.get("wrt") or at)
        self.at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}
        self.shapes = [self.at[w].shape for w in self.wrt]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.options = {**options, "wrt": self.wrt}
        try:
            opening = self._open(spec, constants)
        except errors.NotFound as e:
            if not unknown(e, client.stored_functions):
                raise
            opening = self._open(spec, constants)  # registered again
        self.requests += 1
        self.out_shape = np.shape(opening["value"])
        self.opening_value = self._shaped_value(np.asarray(opening["value"], dtype=np.float64).reshape(-1))

    def _open(self, spec: dict, constants: dict):
        """The evaluation at the opening point, of the program registered once (by this client, before)."""
        stored = self.client.stored_functions
        named = stored.opening(spec, constants, always=True)
        self.function, constants = named.spec, named.constants
        if named.store:
            self.function, constants = self.client.register_function(spec["dsl"], constants), {}
            stored.remember(named, self.function.id)
        if constants:
            self.options["constants"] = constants
        return self.client.evaluate(self.function, self.at, **self.options)

    def _ask(self, kind: str, x, v=None, order: int = 0) -> dict:
        at = {**self.at, **self.split(self.flatten(x))}
        extra = {}
        if v is not None:
            extra["v"] = self.split(self.flatten(v))
        if kind == "taylor":
            extra["order"] = order
        method = getattr(self.client, "evaluate" if kind == "value" else kind)
        r = method(self.function, at, **extra, **self.options)
        self.requests += 1
        self.server_seconds += sum((getattr(r, "timing", None) or {}).values()) / 1e3
        out = {"value": np.asarray(r["value"], dtype=np.float64).reshape(-1)}
        for name in ("gradient", "hvp"):
            if name in r:
                out[name] = self.flatten(r[name])
        for name in ("jacobian", "hessian", "coefficients"):
            if name in r:
                out[name] = np.asarray(r[name], dtype=np.float64)
        return out


def open_session(client, function, at: dict, *, opening: str | None = None, **options) -> _SessionBase:
    """A session on ``client``, a blocking one: a gRPC ``Session`` when it has one (its opening answering
    ``opening`` at ``at``), else one request per call. (An asynchronous client's is awaited:
    ``await AsyncGrpcClient.session(...)``.)"""
    if inspect.iscoroutinefunction(getattr(client, "session", None)) or inspect.iscoroutinefunction(
            getattr(client, "_send", None)):
        raise TypeError("open_session needs a blocking client (Client or GrpcClient); with AsyncGrpcClient, "
                        "`await client.session(...)`")
    if hasattr(client, "session"):
        return client.session(function, at, opening=opening, **options)
    return UnarySession(client, function, at, options)

