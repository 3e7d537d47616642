"""The REST skin: routes decode, call ``Service.handle`` in a worker thread, encode.

Bodies are parsed with orjson and arrays decoded by numpy; pydantic checks
only the structure. Every response, errors included, carries the contract's
error body on failure and a ``Server-Timing`` header (compile, queue, compute).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from derivd import __version__
from derivd.auth import OPEN_PATHS, AccessControl
from derivd.blackbox import BlackBoxSpec
from derivd.config import Settings, get_settings
from derivd.core import Request as CoreRequest
from derivd.core import Service, describe
from derivd.errors import DeadlineExceeded, DerivdError, LimitExceeded, ValidationFailed
from derivd.gateway import codecs, schemas
from derivd.observability import RequestTelemetry

log = logging.getLogger("derivd.gateway")


def json_response(body, status: int = 200, timing: str | None = None) -> Response:
    headers = {"Server-Timing": timing} if timing else None
    return Response(codecs.dumps(body), status_code=status, media_type="application/json", headers=headers)


def server_timing(compile_s: float, queue_s: float, compute_s: float) -> str:
    return f"compile;dur={compile_s * 1e3:.3f}, queue;dur={queue_s * 1e3:.3f}, compute;dur={compute_s * 1e3:.3f}"


class QuickRequests:
    """Which requests may run on the event loop instead of a worker thread.

    Handing a request to a thread and back costs 0.3-1 ms on a busy 2-core machine,
    more than a compiled small derivative costs. A request whose function, shapes and
    endpoint last ran in under ``limit_s`` (compile included), in this process and
    without a black box, runs inline; anything slower or new goes to the thread pool,
    so the loop is never blocked for long.
    """

    def __init__(self, service, limit_s: float, size: int = 4096):
        self.service, self.limit_s, self.size = service, limit_s, size
        self.seconds: dict[tuple, float] = {}

    def key(self, endpoint: str, req) -> tuple | None:
        function = req.function
        if not isinstance(function, dict) or len(function) != 1 or "blackbox" in function:
            return None
        if not self.service.pools.runs_in_process(endpoint, req.mode):
            return None
        (kind, value), = function.items()
        shapes = tuple((k, np.shape(v)) for k, v in req.at.items())
        consts = tuple((k, np.shape(v)) for k, v in req.constants.items())
        return endpoint, kind, str(value), shapes, consts, req.mode, req.verify, req.sparse

    def is_quick(self, key: tuple) -> bool:
        return self.seconds.get(key, float("inf")) < self.limit_s

    def record(self, key: tuple | None, seconds: float) -> None:
        if key is None:
            return
        if len(self.seconds) >= self.size:
            self.seconds.clear()
        self.seconds[key] = seconds


INTERNAL = {"error": {"code": "internal_error", "message": "internal error; it has been logged", "detail": {}}}


class BodyTooLarge(Exception):
    pass


class GatewayMiddleware:
    """Pure ASGI (no per-request task): caps the body size and guarantees a Server-Timing header."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = 0
                if size > self.max_bytes:
                    return await self._too_large(send, size)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(seen)
            return message

        started = False

        async def timed_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"server-timing" for k, _ in headers):
                    headers.append((b"server-timing", server_timing(0, 0, 0).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, timed_send)
        except Exception:
            log.exception("internal error on %s", scope.get("path"))
            if started:
                raise
            await self._send(send, 500, INTERNAL)

    async def _too_large(self, send, size):
        await self._send(send, 413, LimitExceeded(
            f"request body of {size} bytes is over the limit max_request_bytes={self.max_bytes}",
            limit="max_request_bytes", value=size, max=self.max_bytes).to_body())

    @staticmethod
    async def _send(send, status, body):
        body = codecs.dumps(body)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"server-timing", server_timing(0, 0, 0).encode())]})
        await send({"type": "http.response.body", "body": body})


def access_dependency(access: AccessControl, service: Service):
    """The ``X-API-Key`` check and rate limit on every route but health, readiness and metrics."""

    async def check_access(request: Request):
        if not access.enabled or request.url.path in OPEN_PATHS:
            return
        try:
            client = request.client.host if request.client else ""
            key = request.headers.get("x-api-key")
            if access.uses_redis:
                await run_in_threadpool(access.check, key, client)
            else:
                access.check(key, client)
        except DerivdError as e:
            service.metrics.access_denied.labels(e.code).inc()
            raise

    return check_access


def create_app(settings: Settings | None = None, service: Service | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = service or Service(settings)
    access = AccessControl(settings)
    guard = [Depends(access_dependency(access, service))] if access.enabled else None  # open: no per-request cost
    app = FastAPI(title="derivd", version=__version__, dependencies=guard,
                  description="Exact derivatives of array programs and black boxes, as a service.")
    app.state.service = service

    async def read_json(request: Request):
        try:
            raw = await request.body()
        except BodyTooLarge as e:
            raise LimitExceeded(f"request body is over the limit max_request_bytes={settings.max_request_bytes}",
                                limit="max_request_bytes", value=e.args[0], max=settings.max_request_bytes)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise DerivdError(f"request body is not valid JSON: {e}", code="invalid_json") from None

    def to_core(endpoint: str, m) -> CoreRequest:
        def arrays(d, where, integers=False):
            return {k: codecs.decode(v, f"{where}.{k}", integers) for k, v in (d or {}).items()}

        return CoreRequest(
            function=m.function, at=arrays(m.at, "at"), constants=arrays(m.constants, "constants", True),
            wrt=m.wrt, mode=m.mode, fd=m.fd.model_dump() if m.fd else None, verify=m.verify,
            v=arrays(getattr(m, "v", None), "v") if getattr(m, "v", None) is not None else None,
            vs=[arrays(d, f"vs[{i}]") for i, d in enumerate(m.vs)] if getattr(m, "vs", None) else None,
            u=codecs.decode(m.u, "u") if getattr(m, "u", None) is not None else None,
            order=getattr(m, "order", None), sparse=getattr(m, "sparse", False),
            pattern=m.pattern.model_dump() if getattr(m, "pattern", None) is not None else None,
            deadline=time.monotonic() + settings.request_timeout_s,
        )

    def validate(model, body):
        if not isinstance(body, dict):
            raise ValidationFailed("request body must be a JSON object")
        return model.model_validate(body)

    quick = QuickRequests(service, settings.inline_compute_s)

    def derivative_route(endpoint: str):
        model = schemas.REQUESTS[endpoint]

        async def route(request: Request):
            m = validate(model, await read_json(request))
            req = to_core(endpoint, m)
            queued = time.perf_counter()

            def work():
                started = time.perf_counter()
                return started, service.handle(endpoint, req)

            key = quick.key(endpoint, req)
            if key is not None and quick.is_quick(key):
                started, (resp, timings) = work()
            else:
                try:
                    started, (resp, timings) = await asyncio.wait_for(
                        run_in_threadpool(work), timeout=settings.request_timeout_s)
                except asyncio.TimeoutError:
                    raise DeadlineExceeded(f"the request ran past its deadline of {settings.request_timeout_s} s",
                                           deadline_s=settings.request_timeout_s) from None
            quick.record(key, timings.compile + timings.compute)
            request.state.engine = resp.get("engine", "")
            request.state.timings = (timings.compile, started - queued, timings.compute)
            body = codecs.encode(resp, m.encoding == "base64")
            return json_response(body, timing=server_timing(timings.compile, started - queued, timings.compute))

        route.__name__ = endpoint
        return route

    for endpoint, model in schemas.REQUESTS.items():
        extra = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}
        route = derivative_route(endpoint)
        app.add_api_route(f"/v1/{endpoint}", route, methods=["POST"], openapi_extra=extra,
                          summary=f"{endpoint} of a function at a point", tags=["derivatives"])
        app.add_api_route(f"/{endpoint}", route, methods=["POST"], include_in_schema=False)

    async def create_function(request: Request):
        m = validate(schemas.FunctionRequest, await read_json(request))
        constants = {k: codecs.decode(v, f"constants.{k}", True) for k, v in m.constants.items()}
        stored = await run_in_threadpool(service.register_function, m.dsl, constants)
        return json_response({"id": stored.id, "inputs": stored.inputs})

    async def get_function(fid: str):
        return json_response(describe(service.get_function(fid)))

    app.add_api_route("/v1/functions", create_function, methods=["POST"], tags=["functions"],
                      openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"$ref": "#/components/schemas/FunctionRequest"}}}}})
    app.add_api_route("/functions", create_function, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/functions/{fid}", get_function, methods=["GET"], tags=["functions"])
    app.add_api_route("/functions/{fid}", get_function, methods=["GET"], include_in_schema=False)

    async def register_blackbox(request: Request):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValidationFailed("request body must be a JSON object")
        return json_response(await run_in_threadpool(service.register_blackbox, body))

    async def list_blackboxes():
        return json_response({"blackboxes": await run_in_threadpool(service.list_blackboxes)})

    async def delete_blackbox(name: str):
        await run_in_threadpool(service.delete_blackbox, name)
        return Response(status_code=204)

    for prefix, visible in (("/v1", True), ("", False)):
        app.add_api_route(f"{prefix}/blackboxes", register_blackbox, methods=["POST"], tags=["black boxes"],
                          include_in_schema=visible, openapi_extra={"requestBody": {"required": True, "content": {
                              "application/json": {"schema": {"$ref": "#/components/schemas/BlackBoxSpec"}}}}})
        app.add_api_route(f"{prefix}/blackboxes", list_blackboxes, methods=["GET"], tags=["black boxes"],
                          include_in_schema=visible)
        app.add_api_route(f"{prefix}/blackboxes/{{name}}", delete_blackbox, methods=["DELETE"],
                          tags=["black boxes"], include_in_schema=visible, status_code=204)

    @app.get("/healthz", tags=["operations"])
    async def healthz():
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["operations"])
    async def readyz():
        ready, detail = await run_in_threadpool(service.ready)
        return json_response({"status": "ready" if ready else "not ready", **detail}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    _install_error_handlers(app)
    _add_schemas(app)
    app.add_middleware(GatewayMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestTelemetry, metrics=service.metrics)  # outermost: sees every response
    return app


def _add_schemas(app: FastAPI) -> None:
    """Publish the request models in the OpenAPI document (routes parse bodies themselves)."""
    original = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in list(schemas.REQUESTS.values()) + [schemas.FunctionRequest, BlackBoxSpec]:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(js.pop("$defs", {}))
            comps[model.__name__] = js
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DerivdError)
    async def derivd_error(request, exc: DerivdError):
        return json_response(exc.to_body(), exc.status)

    @app.exception_handler(ValidationError)
    async def validation_error(request, exc: ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = f"{where}: {first.get('msg')}" if where else first.get("msg")
        err = ValidationFailed(f"invalid request: {msg}", field=where or None,
                               errors=[{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
                                       for e in exc.errors()[:20]])
        return json_response(err.to_body(), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response({"error": {"code": code, "message": str(exc.detail), "detail": {}}},
                             exc.status_code)
