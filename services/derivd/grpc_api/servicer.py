"""The gRPC skin: ``derivd.v1.Differentiator`` over the dispatcher.

Each unary method (one per row of ``core.endpoints``: its ``rpc`` and
``<rpc>Response``) converts its message (``convert.to_request``), submits it
to the dispatcher within the call's remaining deadline, and converts the
answer back. Nothing here knows what a derivative is, nor where it runs. A
failure aborts the call with the status code for its HTTP status and the
contract's ``code`` in trailing metadata (``derivd-code``, and the whole error
body in ``derivd-error-bin``); the status details are the contract's ``message``.

``HessianVectorProducts`` asks the dispatcher once for an HVP stream at the
stream's point and then feeds it each direction, answering in order.
``Session`` (``grpc_api.session``) keeps one function open for asks of any kind,
each submitted to the dispatcher like a unary call; ``Transports`` names the
session socket's port (``grpc_api.session_socket``: the same session without HTTP/2).
"""

from __future__ import annotations

import contextlib
import logging
import time

from derivd.core import ENDPOINTS
from derivd.errors import DerivdError, ValidationFailed
from derivd.grpc_api import convert, session
from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api import derivd_pb2_grpc as pb_grpc
from derivd.observability import log_request, request_id

log = logging.getLogger("derivd.grpc")

INTERNAL = DerivdError("internal error; it has been logged", code="internal_error", status=500)

UNARY = {row.rpc: (row.name, getattr(pb, f"{row.rpc}Response")) for row in ENDPOINTS.values()}


def abort(context, err: DerivdError, metadata=()):
    context.set_trailing_metadata([*metadata, *convert.error_metadata(err)])
    context.abort(convert.grpc_status(err.status), err.message)


class Call:
    """One RPC's bookkeeping: request id, in-flight gauge, metrics and the access log line."""

    def __init__(self, metrics, context, route: str, transport: str = "grpc"):
        self.metrics, self.context, self.route, self.transport = metrics, context, route, transport
        self.t0 = time.perf_counter()
        incoming = next((v for k, v in context.invocation_metadata() if k == "x-request-id"), None)
        self.request_id = request_id(incoming)
        self.metadata = [("x-request-id", self.request_id)]
        self.engine, self.status, self.timings, self.error = "", 200, (None, None, None), None
        metrics.in_flight.labels(transport).inc()

    def finish(self):
        self.metrics.in_flight.labels(self.transport).dec()
        seconds = time.perf_counter() - self.t0
        compile_s, queue_s, compute_s = self.timings
        self.metrics.record(self.transport, self.route, self.engine, self.status, seconds, queue_s, compile_s,
                            compute_s)
        log_request(request_id=self.request_id, transport=self.transport, route=self.route, status=self.status,
                    error=self.error, engine=self.engine or None, ms=round(seconds * 1e3, 3), peer=self.context.peer())

    def fail(self, err: DerivdError):
        self.status, self.error = err.status, err.code
        abort(self.context, err, self.metadata)

    @contextlib.contextmanager
    def answering(self, what: str):
        """The body's refusal aborts the call with the contract's error; anything else is logged and
        aborts it as an internal error (aborting outside the ``except``: no chained traceback)."""
        try:
            yield
            return
        except DerivdError as e:
            error = e
        except Exception:
            log.exception("internal error %s (request id %s)", what, self.request_id)
            error = INTERNAL
        self.fail(error)


class DifferentiatorServicer(pb_grpc.DifferentiatorServicer):
    def __init__(self, dispatcher, session_socket_port: int = 0, session_socket_keep_s: float = 0.0):
        self.dispatcher = dispatcher
        self.metrics = dispatcher.service.metrics
        self.transports = pb.TransportsResponse(session_socket_port=session_socket_port,
                                                session_socket_keep_s=session_socket_keep_s)

    def Transports(self, request, context):
        """Where else sessions are taken: the session socket's port (0: none) and how long it keeps a
        connection between sessions, for the SDK to choose it."""
        return self.transports

    def unary(self, method: str, message, context):
        endpoint, response_type = UNARY[method]
        call = Call(self.metrics, context, endpoint)
        try:
            with call.answering(f"in {method}"):
                req = convert.to_request(message)
                body, timings = self.dispatcher.submit(endpoint, req, context.time_remaining())
                call.engine = body.get("engine", "")
                call.timings = (timings.compile, timings.queue, timings.compute)
                out = convert.fill(response_type(), body)
                out.timing.CopyFrom(convert.answer_timing(timings, body))
            context.set_trailing_metadata(call.metadata)
            return out
        finally:
            call.finish()

    def HessianVectorProducts(self, request_iterator, context):
        call = Call(self.metrics, context, "hvp_stream")
        try:
            yield from self._hvp_stream(request_iterator, context, call)
            context.set_trailing_metadata(call.metadata)
        finally:
            call.finish()

    def Session(self, request_iterator, context):
        call = Call(self.metrics, context, "session")
        try:
            yield from session.serve(self.dispatcher, self.metrics, request_iterator, context, call)
            context.set_trailing_metadata(call.metadata)
        finally:
            call.finish()

    def _hvp_stream(self, request_iterator, context, call):
        with call.answering("starting an HVP stream"):
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("message") != "start":
                raise ValidationFailed("the first message of HessianVectorProducts must be `start`: the function "
                                       "and the point", field="start")
            req = convert.to_request(first.start)
            stream, queue_s = self.dispatcher.hvp_stream(req, context.time_remaining())
            call.engine = stream.engine
            call.timings = (stream.compile_seconds, queue_s, stream.compute_seconds)
            started = convert.fill(pb.HvpStarted(), {"value": stream.value, "gradient": stream.gradient,
                                                     "engine": stream.engine})
            started.timing.CopyFrom(convert.timing(stream.compile_seconds, queue_s, stream.compute_seconds,
                                                   stream.tier))
        yield pb.HvpStreamResponse(started=started)

        for index, message in enumerate(request_iterator):
            with call.answering("on an HVP stream"):
                if message.WhichOneof("message") != "direction":
                    raise ValidationFailed(f"message {index + 1} of the stream must be a `direction`",
                                           field=f"direction[{index}]", index=index)
                where = f"direction[{index}].v"
                v = convert.arrays(message.direction.v, where)
                hv = self.dispatcher.hvp(stream, v, where, context.time_remaining())
                answer = convert.fill(pb.HvpAnswer(index=index), {"hvp": hv})
            self.metrics.stream_directions.inc()
            yield pb.HvpStreamResponse(hvp=answer)


def _unary_method(method: str):
    def handler(self, request, context):
        return self.unary(method, request, context)

    handler.__name__ = method
    return handler


for _method in UNARY:
    setattr(DifferentiatorServicer, _method, _unary_method(_method))
