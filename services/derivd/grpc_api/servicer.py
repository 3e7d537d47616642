"""The gRPC skin: ``derivd.v1.Differentiator`` over ``core.Service``.

Each unary method converts its message (``convert.to_request``), runs
``Service.handle`` on the compute pool within the call's remaining deadline
(capped by ``request_timeout_s``), and converts the answer back. Nothing here
knows what a derivative is. A failure aborts the call with the status code
for its HTTP status and the contract's ``code`` in trailing metadata
(``derivd-code``, and the whole error body in ``derivd-error-bin``); the status
details are the contract's ``message``.

``HessianVectorProducts`` asks the core once for an HVP session at the
stream's point and then feeds it each direction, answering in order.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time

from derivd.errors import DeadlineExceeded, DerivdError, ValidationFailed
from derivd.grpc_api import convert
from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api import derivd_pb2_grpc as pb_grpc
from derivd.inline import QuickRequests
from derivd.observability import log_request, request_id

log = logging.getLogger("derivd.grpc")

# A direction costs one run of the HVP tape, about what `start` measured: when that is this short,
# directions run on the handler thread (no hand-off to the compute pool), the deadline checked before each.
INLINE_DIRECTION_S = 0.005

INTERNAL = DerivdError("internal error; it has been logged", code="internal_error", status=500)

UNARY = {  # method -> (endpoint, response message)
    "Evaluate": ("evaluate", pb.EvaluateResponse), "Gradient": ("gradient", pb.GradientResponse),
    "Jacobian": ("jacobian", pb.JacobianResponse), "Jvp": ("jvp", pb.JvpResponse), "Vjp": ("vjp", pb.VjpResponse),
    "Hvp": ("hvp", pb.HvpResponse), "Hessian": ("hessian", pb.HessianResponse), "Taylor": ("taylor", pb.TaylorResponse),
    "Derivatives": ("derivatives", pb.DerivativesResponse),
}


def abort(context, err: DerivdError, metadata=()):
    context.set_trailing_metadata([*metadata, *convert.error_metadata(err)])
    context.abort(convert.grpc_status(err.status), err.message)


class Call:
    """One RPC's bookkeeping: request id, in-flight gauge, metrics and the access log line."""

    def __init__(self, metrics, context, route: str):
        self.metrics, self.context, self.route = metrics, context, route
        self.t0 = time.perf_counter()
        incoming = next((v for k, v in context.invocation_metadata() if k == "x-request-id"), None)
        self.request_id = request_id(incoming)
        self.metadata = [("x-request-id", self.request_id)]
        self.engine, self.status, self.timings = "", 200, (None, None, None)
        metrics.in_flight.labels("grpc").inc()

    def finish(self):
        self.metrics.in_flight.labels("grpc").dec()
        seconds = time.perf_counter() - self.t0
        compile_s, queue_s, compute_s = self.timings
        self.metrics.record("grpc", self.route, self.engine, self.status, seconds, queue_s, compile_s, compute_s)
        log_request(request_id=self.request_id, transport="grpc", route=self.route, status=self.status,
                    engine=self.engine or None, ms=round(seconds * 1e3, 3), peer=self.context.peer())

    def fail(self, err: DerivdError):
        self.status = err.status
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
    def __init__(self, service, settings, executor: concurrent.futures.Executor):
        self.service = service
        self.settings = settings
        self.executor = executor
        self.metrics = service.metrics
        self.quick = QuickRequests(service, settings.inline_compute_s)

    def budget(self, context) -> float:
        """Seconds this call may still take: its deadline, capped by ``request_timeout_s``."""
        remaining = context.time_remaining()
        return self.settings.request_timeout_s if remaining is None else min(self.settings.request_timeout_s,
                                                                              remaining)

    def run(self, budget: float, fn, *args):
        """``fn(*args)`` on the compute pool, within ``budget`` seconds; returns (result, queue seconds)."""
        queued = time.perf_counter()
        started = []

        def work():
            started.append(time.perf_counter())
            return fn(*args)

        future = self.executor.submit(work)
        try:
            result = future.result(timeout=max(budget, 0.0))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded(f"the request ran past its deadline of {budget:.3f} s",
                                   deadline_s=round(budget, 3)) from None
        return result, started[0] - queued

    def unary(self, method: str, message, context):
        endpoint, response_type = UNARY[method]
        call = Call(self.metrics, context, endpoint)
        try:
            with call.answering(f"in {method}"):
                req = convert.to_request(message)
                budget = self.budget(context)
                req.deadline = time.monotonic() + budget  # carried to the worker that runs it
                key = self.quick.key(endpoint, req)
                if key is not None and self.quick.is_quick(key):  # on this handler thread: no hand-off
                    (body, timings), queue_s = self.service.handle(endpoint, req), 0.0
                else:
                    (body, timings), queue_s = self.run(budget, self.service.handle, endpoint, req)
                self.quick.record(key, timings.compile + timings.compute)
                call.engine = body.get("engine", "")
                call.timings = (timings.compile, queue_s, timings.compute)
                out = convert.fill(response_type(), body)
                out.timing.CopyFrom(convert.timing(timings.compile, queue_s, timings.compute))
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

    def _hvp_stream(self, request_iterator, context, call):
        with call.answering("starting an HVP stream"):
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("message") != "start":
                raise ValidationFailed("the first message of HessianVectorProducts must be `start`: the function "
                                       "and the point", field="start")
            req = convert.to_request(first.start)
            session, queue_s = self.run(self.budget(context), self.service.hvp_session, req)
            call.engine = session.engine
            call.timings = (session.compile_seconds, queue_s, session.compute_seconds)
            started = convert.fill(pb.HvpStarted(), {"value": session.value, "gradient": session.gradient,
                                                     "engine": session.engine})
            started.timing.CopyFrom(convert.timing(session.compile_seconds, queue_s, session.compute_seconds))
        yield pb.HvpStreamResponse(started=started)

        for index, message in enumerate(request_iterator):
            with call.answering("on an HVP stream"):
                if message.WhichOneof("message") != "direction":
                    raise ValidationFailed(f"message {index + 1} of the stream must be a `direction`",
                                           field=f"direction[{index}]", index=index)
                where = f"direction[{index}].v"
                v = convert.arrays(message.direction.v, where)
                budget = self.budget(context)
                if session.compute_seconds < INLINE_DIRECTION_S and budget > 0:
                    hv = session.hvp(v, where)
                else:
                    hv, _ = self.run(budget, session.hvp, v, where)
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
