"""The REST skin: FastAPI for the documented surface, a plain ASGI app for the hot routes.

The derivative routes are ``derivatives.DerivativeRoutes`` (no framework on the
warm path); functions, black boxes, health, readiness, metrics and the OpenAPI
document are FastAPI routes behind it. Around both, pure ASGI middleware:
telemetry (request id, metrics, one log line), the API-key check and rate
limit, and the body cap with a guaranteed ``Server-Timing`` header. Every
refusal carries the contract's error body.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from derivd import __version__
from derivd.auth import OPEN_PATHS, AccessControl
from derivd.blackbox import BlackBoxSpec
from derivd.config import Settings, get_settings
from derivd.core import Service, describe
from derivd.dispatch import Dispatcher
from derivd.errors import DerivdError, ValidationFailed
from derivd.gateway import codecs, docs, export, playground, schemas
from derivd.gateway.content_type import RequireJson
from derivd.gateway.derivatives import DerivativeRoutes
from derivd.gateway.http import (INTERNAL, NO_TIMING, BodyTooLarge, error_response, parse_json, send_json,
                                 too_large, validate)
from derivd.observability import RequestTelemetry

log = logging.getLogger("derivd.gateway")


def json_response(body, status: int = 200) -> Response:
    return Response(codecs.dumps(body), status_code=status, media_type="application/json")


class GatewayMiddleware:
    """Pure ASGI (no per-request task): caps the body size, guarantees a Server-Timing header, and
    answers an unexpected error with the contract's 500."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    continue
                if size > self.max_bytes:
                    return await send_json(send, 413, codecs.dumps(too_large(size, self.max_bytes).to_body()))
                declared = True
        if not declared:  # chunked: counted as it arrives (a declared length is the server's to hold to)
            receive = self._limited(receive)
        started = False

        async def timed_send(message):
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", ())
                if not _has_timing(headers):
                    message = {**message, "headers": [*headers, (b"server-timing", NO_TIMING)]}
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            log.exception("internal error on %s", scope.get("path"))
            if started:
                raise
            await send_json(send, 500, codecs.dumps(INTERNAL))

    def _limited(self, receive):
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(seen)
            return message

        return limited_receive


def _has_timing(headers) -> bool:
    for name, _ in headers:
        if name == b"server-timing" or name.lower() == b"server-timing":  # as derivd writes it, else any case
            return True
    return False


def _public(path: str) -> bool:
    """The documentation and playground pages (``docs.PUBLIC_PATHS``, ``docs.PUBLIC_PREFIXES``), which a
    browser loads keyless."""
    return path in docs.PUBLIC_PATHS or any(path == p or path.startswith(p + "/") for p in docs.PUBLIC_PREFIXES)


class AccessGuard:
    """Pure ASGI: the ``X-API-Key`` check and rate limit on every path but health, readiness,
    metrics and the documentation pages. Installed only when keys or a limit are configured (an
    open service pays nothing)."""

    def __init__(self, app, access: AccessControl, metrics):
        self.app, self.access, self.metrics = app, access, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or _public(scope["path"]):
            return await self.app(scope, receive, send)
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-api-key"), None)
        client = (scope.get("client") or ("",))[0]
        try:
            if self.access.uses_redis:
                await run_in_threadpool(self.access.check, key, client)
            else:
                self.access.check(key, client)
        except DerivdError as e:
            self.metrics.access_denied.labels(e.code).inc()
            wait = e.detail.get("retry_after_s")  # a 429 says when, as HTTP clients and proxies read it
            extra = ((b"retry-after", str(math.ceil(wait)).encode()),) if wait is not None else ()
            return await send_json(send, e.status, codecs.dumps(e.to_body()), extra=extra)
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> "Gateway":
    """The ASGI app: middleware, then the derivative routes, then FastAPI for the rest; ``dispatcher``
    (shared with a gRPC server beside it) runs the requests, a new one by default."""
    settings = settings or get_settings()
    dispatcher = dispatcher or Dispatcher(Service(settings))
    service = dispatcher.service
    app = FastAPI(title="derivd", version=__version__, docs_url=None, redoc_url=None,
                  description="Exact derivatives of array programs and black boxes, as a service. "
                              "The language: [/docs/language](/docs/language); try it: [/playground](/playground).")
    docs.install(app)
    playground.install(app)

    async def read_json(request: Request):
        try:
            raw = await request.body()
        except BodyTooLarge as e:
            raise too_large(e.args[0], settings.max_request_bytes) from None
        return parse_json(raw)

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
    export.add_route(app, service, dispatcher)

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
        ready, detail = await run_in_threadpool(dispatcher.ready)
        return json_response({"status": "ready" if ready else "not ready", **detail}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    _install_error_handlers(app)
    _add_schemas(app)
    outer = DerivativeRoutes(RequireJson(app), dispatcher, settings)
    outer = GatewayMiddleware(outer, max_bytes=settings.max_request_bytes)
    access = AccessControl(settings)
    if access.enabled:
        outer = AccessGuard(outer, access, service.metrics)
    return Gateway(dispatcher, RequestTelemetry(outer, metrics=service.metrics))  # telemetry sees every response


def from_environment() -> "Gateway":
    """The app of one of ``derivd serve --gateways N``'s processes: settings from the environment
    its parent prepared, logging and allocator as ``derivd serve`` sets them."""
    from derivd.observability import configure_logging
    from derivd.allocator import freeze_heap, tune_allocator
    from derivd.engines import tiers

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    tune_allocator()
    tiers.preload(settings)
    app = create_app(settings)
    freeze_heap()
    return app


class Gateway:
    """The ASGI app ``derivd serve`` runs: the middleware chain, and the dispatcher and service behind it."""

    def __init__(self, dispatcher: Dispatcher, chain):
        self.dispatcher, self.service, self.chain = dispatcher, dispatcher.service, chain

    async def __call__(self, scope, receive, send):
        await self.chain(scope, receive, send)


def _add_schemas(app: FastAPI) -> None:
    """Publish the request models in the OpenAPI document (routes parse bodies themselves), and the
    derivative routes, which ``DerivativeRoutes`` serves outside the framework."""
    original = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        for endpoint, model in schemas.REQUESTS.items():  # the endpoint table's rows
            schema["paths"][f"/v1/{endpoint}"] = {"post": {
                "tags": ["derivatives"], "summary": f"{endpoint} of a function at a point",
                "operationId": f"{endpoint}_v1_{endpoint}_post",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
                "responses": {"200": {"description": "the derivative; arrays as nested lists or base64"},
                              "4XX": {"description": "refused: the contract's error body"}}}}
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in list(schemas.REQUESTS.values()) + [schemas.FunctionRequest, BlackBoxSpec]:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(js.pop("$defs", {}))
            comps[model.__name__] = js
        app.openapi_schema = docs.describe_routes(schema)
        return schema

    app.openapi = openapi


def _install_error_handlers(app: FastAPI) -> None:
    async def refused(request, exc):
        status, body = error_response(exc)
        wait = getattr(exc, "detail", {}).get("retry_after_s")  # a 503 that says when, as a 429 does
        headers = {"retry-after": str(math.ceil(wait))} if wait is not None else None
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    app.add_exception_handler(DerivdError, refused)
    app.add_exception_handler(ValidationError, refused)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response({"error": {"code": code, "message": str(exc.detail), "detail": {}}},
                             exc.status_code)
