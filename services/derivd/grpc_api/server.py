"""The public gRPC server: ``derivd.v1.Differentiator``, health, reflection, API keys.

``GrpcServer(dispatcher, settings, port)`` serves beside the REST gateway on
the same ``dispatch.Dispatcher``. Message sizes are raised from gRPC's 4 MiB default to
``grpc_max_message_bytes`` on both ends (``channel_options`` gives clients the
same numbers), because a Jacobian or a point of a few million float64 is an
ordinary request. Handlers run on gRPC's thread pool; the work runs on the
dispatcher's compute threads (unless quick) so that a handler can give up at
its deadline.

The port is this server's alone: ``grpc.so_reuseport`` is off, so a port another
process listens on (a second ``derivd serve`` with the same ``--grpc-port``) is
an ``OSError`` at start, not a second server taking half the requests at random.

Beside it, unless ``session_socket_port`` is -1, the session socket
(``session_socket``: the ``Session`` without HTTP/2, several times faster a
round trip) listens on the same host, with the same API keys and limits; the
``Transports`` method tells clients its port. It starts and stops with gRPC.

Health (``grpc.health.v1``) reports SERVING for ``""`` and the service while
``Dispatcher.ready()`` holds, refreshed every few seconds, and NOT_SERVING once
shutting down. Reflection lists the services.
"""

from __future__ import annotations

import concurrent.futures
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from derivd.auth import AccessControl
from derivd.errors import DerivdError
from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api import derivd_pb2_grpc as pb_grpc
from derivd.grpc_api.servicer import DifferentiatorServicer, abort
from derivd.grpc_api.session_socket import SessionSocketServer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Differentiator"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
HEALTH_REFRESH_S = 5.0
# Behind a Kubernetes Service, a long-lived client connection would stay on one gateway pod: connections
# are closed after 5 minutes (calls in flight get the request deadline to finish), so clients reconnect
# and new pods get traffic.
MAX_CONNECTION_AGE_MS = 300_000


def channel_options(max_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]


class AccessInterceptor(grpc.ServerInterceptor):
    """API key and rate limit on every derivd method (health and reflection stay open), as REST does."""

    def __init__(self, access: AccessControl, metrics):
        self.access = access
        self.metrics = metrics

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or not self.access.enabled or details.method.startswith(OPEN_METHODS):
            return handler
        key = next((v for k, v in details.invocation_metadata if k == "x-api-key"), None)

        def guarded(behaviour):
            def run(request, context):
                try:
                    self.access.check(key, _peer_host(context.peer()))
                except DerivdError as e:
                    self.metrics.access_denied.labels(e.code).inc()
                    abort(context, e)
                return behaviour(request, context)

            return run

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=guarded(handler.unary_unary))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=guarded(handler.stream_stream))
        return handler


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` / ``ipv6:[::1]:5555`` -> the address without the port."""
    _, _, rest = peer.partition(":")
    return rest.rsplit(":", 1)[0].strip("[]") if rest else peer


class GrpcServer:
    def __init__(self, dispatcher, settings, port: int, host: str | None = None,
                 access: AccessControl | None = None):
        self.dispatcher = dispatcher
        self.settings = settings
        access = access or AccessControl(settings)
        self.server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(settings.grpc_threads, thread_name_prefix="grpc"),
            interceptors=[AccessInterceptor(access, dispatcher.service.metrics)],
            options=channel_options(settings.grpc_max_message_bytes) + [
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                ("grpc.max_connection_age_grace_ms", int(1000 * (settings.request_timeout_s + 5)))])
        self.sessions = (SessionSocketServer(dispatcher, settings, access, host or settings.host,
                                             settings.session_socket_port)
                         if settings.session_socket_port >= 0 else None)
        pb_grpc.add_DifferentiatorServicer_to_server(
            DifferentiatorServicer(dispatcher, *((self.sessions.port, self.sessions.keep_s) if self.sessions else ())),
            self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        address = f"{host or settings.host}:{port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            if self.sessions is not None:
                self.sessions.stop()
            raise OSError(f"gRPC cannot listen on {address}: the port is taken (or the address is not this "
                          f"machine's); choose another with --grpc-port, or 0 to turn gRPC off")
        self._stopping = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_health, name="grpc-health", daemon=True)

    def start(self) -> GrpcServer:
        self._set_health()
        self.server.start()
        if self.sessions is not None:
            self.sessions.start()
        self._refresher.start()
        return self

    def _set_health(self):
        ready, _ = self.dispatcher.ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _refresh_health(self):
        while not self._stopping.wait(HEALTH_REFRESH_S):
            self._set_health()

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self.sessions is not None:
            self.sessions.stop()
        self.server.stop(grace).wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(grace=1.0)
