"""Function sessions (gRPC ``Session``): one function compiled once, then many asks carrying only the point.

The first message, ``open``, names the function, a point (whose shapes the
session keeps), constants, ``wrt`` and ``mode``; a stored id is resolved once
here, and the opening point is evaluated through the dispatcher, which
compiles the program and checks the request as any other. Each ``ask`` then
carries the wrt inputs as one flat vector ``x`` (and a flat direction ``v``
for ``hvp`` and ``taylor``) and becomes the endpoint request of its kind at
that point, submitted to the same ``Dispatcher.submit`` as a unary call: the
same deadline, inline-or-thread policy and per-route metrics
(``session.<endpoint>``), with the program compiled at the opening kept
(``Service.compiled``), so an ask run in this process goes from its checks
straight to the engine: 8-14 µs less a round trip (measured) than resolving and looking
the program up again each time. Answers are flat in the same order. An ask the
server refuses is answered with its ``error``; the session stays open.

An opening with ``store`` also stores its program and constants as
``POST /v1/functions`` does (content-addressed, in the shared store) and
answers the id in ``opened.function_id``, so that the client's next opening of
the same function sends ``{"id"}`` and no constants (the SDK remembers it:
1000 x 20 constants are 160 kB to encode, send and decode per opening). Storing
is best effort: a function the store refuses (too large, the store down) opens
all the same, without an id. An opening by id answers that id.

An opening's ``kind`` (default ``value``) is what it computes at its point:
``gradient``, ``jacobian`` or ``hessian`` submit that endpoint instead of
``evaluate`` and answer it whole in ``opened.answer``, so that an optimiser's
first ask (at its starting point, the opening's) costs no round trip and no
second run. ``end`` closes a session as the end of the stream does, answered
with ``ended`` (the session socket then keeps the connection for the next one).
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np

from derivd.core import endpoint
from derivd.core.request import Request
from derivd.errors import DerivdError, ValidationFailed
from derivd.grpc_api import convert
from derivd.grpc_api import derivd_pb2 as pb

log = logging.getLogger("derivd.grpc")

ENDPOINT_OF = {pb.SESSION_VALUE: "evaluate", pb.SESSION_GRADIENT: "gradient", pb.SESSION_JACOBIAN: "jacobian",
               pb.SESSION_HVP: "hvp", pb.SESSION_HESSIAN: "hessian", pb.SESSION_TAYLOR: "taylor"}
NEEDS_V = ("hvp", "taylor")
OPENING_KINDS = (pb.SESSION_VALUE, pb.SESSION_GRADIENT, pb.SESSION_JACOBIAN, pb.SESSION_HESSIAN)


def _flat(a) -> pb.Array:
    arr = np.ascontiguousarray(a, dtype="<f8")
    return pb.Array(shape=arr.shape, data=arr.tobytes(), dtype="float64")


class FunctionSession:
    """The opening request (resolved) and the flat layout of its wrt inputs."""

    def __init__(self, dispatcher, metrics, opening, remaining: float | None, transport: str = "grpc",
                 store: bool = False, kind: int = pb.SESSION_VALUE, charge=None):
        self.dispatcher, self.metrics, self.transport, self.charge = dispatcher, metrics, transport, charge
        if kind not in OPENING_KINDS:
            raise ValidationFailed(f"an opening computes the value, gradient, jacobian or hessian at its point; "
                                   f"not kind {kind} (hvp and taylor need a direction: ask them)", field="open.kind")
        base = dispatcher.service.resolve(opening)
        self.base = base
        body, timings = dispatcher.submit(ENDPOINT_OF[kind], self._request(base.at), remaining)
        function_id = opening.function.get("id", "")
        if store and "dsl" in opening.function:  # checked by the evaluation above: a program that runs
            function_id = self._store(opening)
        self.compiled = None  # the program, compiled here on the first ask that runs in this process
        self.wrt = list(base.wrt)
        self.shapes = [np.shape(base.at[w]) for w in self.wrt]  # wrt names are checked by the evaluate above
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n = sum(self.sizes)
        value = np.asarray(body["value"], dtype=np.float64)
        timing = convert.answer_timing(timings, body)
        self.opened = pb.SessionOpened(wrt=self.wrt, n=self.sizes, out_shape=value.shape, value=_flat(value),
                                       timing=timing, function_id=function_id)
        if kind != pb.SESSION_VALUE:
            self.opened.answer.CopyFrom(self._fill(0, body))
            self.opened.answer.timing.CopyFrom(timing)

    def _store(self, opening) -> str:
        """The id under which the opening's program and constants are stored, or "" if they were not."""
        try:
            return self.dispatcher.service.register_function(opening.function["dsl"], opening.constants).id
        except DerivdError as e:
            log.info("a session's function was not stored (%s); it opens without an id", e.message)
            return ""

    def _request(self, at: dict) -> Request:
        """The opening request at ``at`` (a fresh one: the dispatcher sets its deadline). Built from the
        opening's fields: ``dataclasses.replace`` costs twice as much, on every ask."""
        return Request(**{**self.base.__dict__, "at": at})

    def _compiled(self, name: str):
        """The compiled program for an ask of endpoint ``name`` where it runs in this process (a worker
        pool's asks get None: the gateway compiles nothing it would not use)."""
        if self.compiled is None and "dsl" in self.base.function and \
                self.dispatcher.router.runs_in_process(endpoint(name), self.base.mode):
            self.compiled = self.dispatcher.service.compiled(self.base)
        return self.compiled

    def _split(self, flat: pb.Array, where: str) -> dict[str, np.ndarray]:
        x = convert.to_numpy(flat, where)
        if x.ndim != 1 or x.size != self.n:
            raise ValidationFailed(f"{where} must be a flat vector of the {self.n} wrt values (in wrt order "
                                   f"{self.wrt}); got shape {list(x.shape)}", field=where)
        out, start = {}, 0
        for name, shape, size in zip(self.wrt, self.shapes, self.sizes):
            out[name] = x[start:start + size].reshape(shape)
            start += size
        return out

    def _join(self, parts: dict) -> np.ndarray:
        if len(self.wrt) == 1:  # the usual case (an optimiser's one vector): no copy
            return np.asarray(parts[self.wrt[0]], dtype=np.float64).reshape(-1)
        return np.concatenate([np.asarray(parts[w], dtype=np.float64).reshape(-1) for w in self.wrt])

    def answer(self, ask: pb.SessionAsk, remaining: float | None) -> pb.SessionAnswer:
        t0 = time.perf_counter()
        name = ENDPOINT_OF.get(ask.kind)
        route = f"session.{name}"
        try:
            if self.charge is not None:  # each ask a request against the rate limit (RateLimited: this ask's 429)
                self.charge()
            if name is None:
                raise ValidationFailed(f"unknown session kind {ask.kind}", field="ask.kind")
            req = self._request({**self.base.at, **self._split(ask.x, "ask.x")})
            if name in NEEDS_V:
                req.v = self._split(ask.v, "ask.v")
            if name == "taylor":
                req.order = ask.order
            body, timings = self.dispatcher.submit(name, req, remaining, self._compiled(name))
            out = self._fill(ask.id, body)
            out.timing.CopyFrom(convert.answer_timing(timings, body))
            self.metrics.record(self.transport, route, out.engine, 200, time.perf_counter() - t0,
                                timings.queue, timings.compile, timings.compute)
            return out
        except DerivdError as e:
            err = e
        except Exception:
            log.exception("internal error on a session's %s", route)
            err = DerivdError("internal error; it has been logged", code="internal_error", status=500)
        self.metrics.record(self.transport, route, "", err.status, time.perf_counter() - t0)
        return pb.SessionAnswer(id=ask.id, status=err.status, error=pb.Error(
            code=err.code, message=err.message, detail_json=json.dumps(err.detail, default=str)))

    def _fill(self, ask_id: int, body: dict) -> pb.SessionAnswer:
        out = pb.SessionAnswer(id=ask_id, engine=body.get("engine", ""),
                               value=_flat(np.asarray(body["value"], dtype=np.float64).reshape(-1)))
        if "gradient" in body:
            out.gradient.CopyFrom(_flat(self._join(body["gradient"])))
        if "hvp" in body:
            out.hvp.CopyFrom(_flat(self._join(body["hvp"])))
        if "jacobian" in body:
            out.jacobian.CopyFrom(_flat(body["jacobian"]))
        if "hessian" in body:
            out.hessian.CopyFrom(_flat(body["hessian"]))
        if "coefficients" in body:
            out.coefficients.CopyFrom(_flat(body["coefficients"]))
        return out


ENDED = pb.SessionResponse(ended=pb.SessionEnded())


def serve(dispatcher, metrics, request_iterator, context, call, charge=None):
    """The ``Session`` RPC: ``opened`` for the first message, then one ``answer`` per ask, in order, until
    the requests end or one is ``end`` (answered ``ended``, the last response) (on gRPC, and on the session
    socket, ``grpc_api.session_socket``, whose ``context`` and ``call`` say so). ``charge``, if given, is
    called before each ask (the session socket's per-ask rate limit)."""
    with call.answering("opening a session"):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("message") != "open":
            raise ValidationFailed("the first message of Session must be `open`: the function and a point",
                                   field="open")
        opening = first.open
        session = FunctionSession(dispatcher, metrics, convert.to_request(opening), context.time_remaining(),
                                  call.transport, store=opening.store, kind=opening.kind, charge=charge)
    yield pb.SessionResponse(opened=session.opened)
    for index, message in enumerate(request_iterator):
        which = message.WhichOneof("message")
        if which == "end":
            yield ENDED
            return
        with call.answering("on a session"):
            if which != "ask":
                raise ValidationFailed(f"message {index + 1} of the session must be an `ask` (or `end`)",
                                       field=f"ask[{index}]", index=index)
        yield pb.SessionResponse(answer=session.answer(message.ask, context.time_remaining()))
