"""A worker process: ``core.Service`` engines behind the internal gRPC API.

``derivd worker --engines forward,reverse --listen 0.0.0.0:50052`` runs one
for remote use; ``derivd serve --workers N`` starts N of them on loopback
(``supervisor``). A worker computes every endpoint in process (its own tape
cache, in front of the same Redis as everyone else), answers the standard gRPC
health service, and refuses a request routed for an engine family it was not
started for (a misconfigured pool target), with 503 ``misrouted``.

Callers. Every call but a health check must carry the shared secret
``worker_token`` in the metadata ``x-derivd-worker-token`` (``CallerCheck``);
anything else is UNAUTHENTICATED before the request is even decoded, so the
internal API is no way around the gateway's keys and rate limits. A worker
refuses to start without a token; local ones get their gateway's, made per run.

Deadlines. The call's gRPC deadline is the request's remaining deadline; the
gateway answers 504 when it passes, and the work stops at its next check
(``derivd.deadlines``: between passes, loop iterations and tape steps). One
numpy call cannot be interrupted, so the ``Watchdog`` recycles the worker if
it must: a request still running ``worker_stop_grace_s`` after its deadline
makes the process exit (status 75), and its supervisor (or Kubernetes) starts
a fresh one. Requests that were sharing the worker fail as
UNAVAILABLE and are retried once on another worker by the gateway.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent import futures
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from derivd import clock, deadlines
from derivd.allocator import freeze_heap, tune_allocator
from derivd.core import ENDPOINTS, Request, Service
from derivd.errors import DerivdError
from derivd.dispatch import codec, worker_pb2 as pb, worker_pb2_grpc as pb_grpc
from derivd.dispatch.pools import FAMILIES, POOL_SETTINGS, TOKEN_METADATA, grpc_options
from derivd.engines import tiers

log = logging.getLogger("derivd.worker")

EXIT_OVERRUN = 75  # the watchdog's exit status: a request could not stop at its deadline
SERVICE_NAME = "derivd.internal.v1.Worker"
REQUEST_FIELDS = {f.name for f in dataclasses.fields(Request)} - {"deadline"}


class Watchdog:
    """Exits the process when a request is still running ``grace_s`` past its deadline (by ``clock.now()``,
    on whose scale deadlines are)."""

    def __init__(self, grace_s: float, exit=os._exit):
        self.grace_s = grace_s
        self._exit = exit
        self._running: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._next = 0
        threading.Thread(target=self._loop, name="derivd-watchdog", daemon=True).start()

    @contextmanager
    def watch(self, deadline: float, what: str):
        with self._lock:
            token = self._next = self._next + 1
            self._running[token] = (deadline, what)
        try:
            yield
        finally:
            with self._lock:
                del self._running[token]

    def _loop(self):
        while True:
            time.sleep(0.05)
            now = clock.now()
            with self._lock:
                overdue = [what for deadline, what in self._running.values() if now > deadline + self.grace_s]
            if overdue:
                log.error("request %s is still running %.2f s past its deadline: exiting so that this worker "
                          "is replaced", overdue[0], self.grace_s)
                logging.shutdown()
                self._exit(EXIT_OVERRUN)


class CallerCheck(grpc.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) a Worker call without the shared token; health checks stay open."""

    def __init__(self, token: str):
        self._token = token.encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a worker answers its gateways only: the worker "
                          "token is missing or wrong")

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, details):
        if details.method.startswith(f"/{SERVICE_NAME}/"):
            sent = dict(details.invocation_metadata).get(TOKEN_METADATA, "")
            if not hmac.compare_digest(sent.encode(), self._token):
                return self._refuse
        return continuation(details)


class WorkerServicer(pb_grpc.WorkerServicer):
    def __init__(self, service: Service, engines: set[str], watchdog: Watchdog):
        self.service = service
        self.engines = engines
        self.watchdog = watchdog

    def Run(self, request: pb.WorkRequest, context) -> pb.WorkResponse:
        remaining = context.time_remaining()
        deadline = clock.now() + (remaining if remaining is not None
                                  else self.service.settings.request_timeout_s)
        try:
            req = self._request(request)
            with self.watchdog.watch(deadline, f"{request.endpoint} {request.request_id}".strip()):
                response, timings = self.service.compute(request.endpoint, dataclasses.replace(req, deadline=deadline))
            reply = pb.WorkResponse(response=codec.encode_struct(response), compile_seconds=timings.compile,
                                    compute_seconds=timings.compute)
        except DerivdError as e:
            reply = pb.WorkResponse(error=pb.Error(code=e.code, message=e.message, status=e.status,
                                                   detail=codec.encode_struct(e.detail)))
        except Exception:
            log.exception("internal error on %s %s", request.endpoint, request.request_id)
            reply = pb.WorkResponse(error=pb.Error(code="internal_error", status=500,
                                                   message="internal error in a worker; it has been logged"))
        reply.cache_counts.update(self.service.cache.stats.drain())
        reply.tier2_counts.update(tiers.drain())
        reply.worker_pid = os.getpid()
        return reply

    def _request(self, request: pb.WorkRequest) -> Request:
        if request.endpoint not in ENDPOINTS:
            raise DerivdError(f"a worker serves {', '.join(ENDPOINTS)}, not {request.endpoint!r}",
                              code="misrouted", status=503)
        if request.family not in self.engines:
            raise DerivdError(f"this worker serves the {', '.join(sorted(self.engines))} engines, not "
                              f"{request.family!r}: check the gateway's DERIVD_POOL_* targets",
                              code="misrouted", status=503, family=request.family)
        try:
            fields = codec.decode_struct(request.request)
        except codec.CodecError as e:
            raise DerivdError(f"malformed worker request: {e}", code="internal_error", status=500) from None
        unknown = set(fields) - REQUEST_FIELDS
        if unknown:
            raise DerivdError(f"worker request has unknown fields {sorted(unknown)}: gateway and worker versions "
                              "differ", code="internal_error", status=500)
        return Request(**fields)


def parse_engines(text: str) -> set[str]:
    engines = {e.strip() for e in text.split(",") if e.strip()}
    unknown = engines - set(FAMILIES)
    if unknown or not engines:
        raise ValueError(f"--engines takes a comma-separated subset of {', '.join(FAMILIES)}; got {text!r}")
    return engines


def build_server(settings, listen: str, engines: set[str]) -> tuple[grpc.Server, int]:
    """A started worker server on ``listen`` (host:port, port 0 for any) and the port it bound; it
    answers only callers with ``settings.worker_token`` (ValueError without one)."""
    if settings.worker_token is None or not settings.worker_token.get_secret_value():
        raise ValueError("a worker needs DERIVD_WORKER_TOKEN, the secret its gateways send (e.g. "
                         "`openssl rand -hex 32`, the same on the gateways and the workers)")
    # A worker computes, never forwards, and never stores: ids and black boxes stay with the gateway.
    settings = settings.model_copy(update={**dict.fromkeys(POOL_SETTINGS), "data_dir": "none"})
    service = Service(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="derivd-worker"),
        options=grpc_options(settings) + [
            ("grpc.so_reuseport", 0),  # two workers on one port is a mistake, not load balancing
            # Clients reconnect (and re-resolve DNS) at least this often, so new workers get traffic.
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", int(1000 * (settings.request_timeout_s + 5))),
        ], interceptors=[CallerCheck(settings.worker_token.get_secret_value())])
    pb_grpc.add_WorkerServicer_to_server(
        WorkerServicer(service, engines, Watchdog(settings.worker_stop_grace_s)), server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server, port


def serve(settings, listen: str, engines: set[str]) -> None:
    """Run one worker until SIGTERM/SIGINT or its parent dies. A remote worker drains (in-flight
    requests finish within ``request_timeout_s``); a local one stops computing at once, as its
    gateway does (``gateway.server.stop_computing``)."""
    tune_allocator()
    tiers.preload(settings)
    server, port = build_server(settings, listen, engines)
    freeze_heap()
    log.info("derivd worker %d serving %s on %s", os.getpid(), ",".join(sorted(engines)), listen)
    stop = threading.Event()
    parent = multiprocessing.parent_process()

    def stop_serving(*_):
        if parent is not None:  # a local worker stops with its gateway: no one is left to answer
            deadlines.stop_all()  # its computations end at their next check (503 shutting_down)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_serving)
    if parent is not None:  # a local worker: it goes when its gateway goes, even by SIGKILL
        threading.Thread(target=lambda: (parent.join(), stop_serving()), daemon=True).start()
    stop.wait()
    server.stop(grace=settings.request_timeout_s).wait()


def run_local(settings, listen: str, engines: set[str]) -> None:
    """Entry point of a worker process started by the supervisor (spawn context)."""
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker-{os.getpid()} %(name)s %(message)s")
    try:
        serve(settings, listen, engines)
    except (OSError, ValueError) as e:
        log.error("worker cannot start: %s", e)
        sys.exit(1)


def run_spare(settings, engines: set[str], port_pipe) -> None:
    """Entry point of a spare worker: started ahead of need (imports done, the slow part of a start),
    it says so, waits for the port of a worker that died, then serves there. Its pipe closing (the
    supervisor stopping or gone) ends it."""
    try:
        port_pipe.send("ready")
    except OSError:  # the supervisor sent a port before we were ready, and closed its end: still readable
        pass
    try:
        port = port_pipe.recv()
    except (EOFError, OSError):
        return
    run_local(settings, f"127.0.0.1:{port}", engines)
