"""The derivative routes (``POST /v1/{endpoint}``) as a plain ASGI app in front of the framework.

Why not FastAPI routes: on a warm request the framework's routing, request
object, dependency solving and middleware layers cost several times what a
compiled small derivative does (issue 6 measures a 50×50 Jacobian and a
10-input gradient). These routes need none of it: the body is JSON, pydantic
checks its structure, ``Service.handle`` does the rest. Everything else
(functions, black boxes, health, metrics, the OpenAPI document, unknown
paths) goes on to the framework. Telemetry, the API-key check and the body cap
are ASGI middleware around both, so they hold here as everywhere.
"""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from derivd.core import Request as CoreRequest
from derivd.errors import DeadlineExceeded, DerivdError
from derivd.gateway import codecs, schemas
from derivd.inline import QuickRequests
from derivd.gateway.http import (BodyTooLarge, error_response, parse_json, send_json, server_timing, too_large,
                                 validate)


def to_core(m, deadline_s: float) -> CoreRequest:
    """A validated request model -> the core's request, arrays decoded (and checked) by numpy."""
    def arrays(d, where, integers=False):
        return {k: codecs.decode(v, f"{where}.{k}", integers) for k, v in (d or {}).items()}

    fields = m.__dict__  # the endpoint's own fields (a missing one through getattr costs a pydantic miss)
    v, vs, u, pattern = fields.get("v"), fields.get("vs"), fields.get("u"), fields.get("pattern")
    return CoreRequest(
        function=m.function, at=arrays(m.at, "at"), constants=arrays(m.constants, "constants", True),
        wrt=m.wrt, mode=m.mode, fd=m.fd.model_dump() if m.fd else None, verify=m.verify,
        v=arrays(v, "v") if v is not None else None,
        vs=[arrays(d, f"vs[{i}]") for i, d in enumerate(vs)] if vs else None,
        u=codecs.decode(u, "u") if u is not None else None,
        order=fields.get("order"), sparse=fields.get("sparse", False),
        pattern=pattern.model_dump() if pattern is not None else None,
        deadline=time.monotonic() + deadline_s,
    )


class DerivativeRoutes:
    """ASGI: serves ``/v1/{endpoint}`` and its unversioned alias for every endpoint in
    ``schemas.REQUESTS``; passes any other request to ``app``."""

    def __init__(self, app, service, settings):
        self.app, self.service, self.settings = app, service, settings
        self.quick = QuickRequests(service, settings.inline_compute_s)
        self.routes = {}
        for endpoint in schemas.REQUESTS:
            for path in (f"/v1/{endpoint}", f"/{endpoint}"):
                self.routes[path] = (endpoint, path)

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        endpoint, path = route
        state = scope.setdefault("state", {})
        state["route"] = path
        try:
            if scope["method"] != "POST":
                raise DerivdError(f"{path} takes POST", code="method_not_allowed", status=405)
            status, body, timing = 200, *await self._serve(endpoint, receive, state)
        except Exception as e:
            refused = error_response(e)
            if refused is None:
                raise  # GatewayMiddleware logs it and answers 500
            (status, body), timing = refused, server_timing(0, 0, 0)
        await send_json(send, status, body, timing.encode())

    async def _serve(self, endpoint: str, receive, state: dict) -> tuple[bytes, str]:
        m = validate(schemas.REQUESTS[endpoint], parse_json(await self._body(receive)))
        req = to_core(m, self.settings.request_timeout_s)
        queued = time.perf_counter()

        def work():
            started = time.perf_counter()
            return started, self.service.handle(endpoint, req)

        key = self.quick.key(endpoint, req)
        if key is not None and self.quick.is_quick(key):
            started, (resp, timings) = work()
        else:
            try:
                started, (resp, timings) = await asyncio.wait_for(
                    run_in_threadpool(work), timeout=self.settings.request_timeout_s)
            except asyncio.TimeoutError:
                raise DeadlineExceeded(f"the request ran past its deadline of {self.settings.request_timeout_s} s",
                                       deadline_s=self.settings.request_timeout_s) from None
        self.quick.record(key, timings.compile + timings.compute)
        state["engine"] = resp.get("engine", "")
        state["timings"] = (timings.compile, started - queued, timings.compute)
        body = codecs.dumps(codecs.encode(resp, m.encoding == "base64"))
        return body, server_timing(timings.compile, started - queued, timings.compute)

    async def _body(self, receive) -> bytes:
        chunks = []
        try:
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except BodyTooLarge as e:
            raise too_large(e.args[0], self.settings.max_request_bytes) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
