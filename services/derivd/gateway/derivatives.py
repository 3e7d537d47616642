"""The derivative routes (``POST /v1/{endpoint}``) as a plain ASGI app in front of the framework.

Why not FastAPI routes: on a warm request the framework's routing, request
object, dependency solving and middleware layers cost several times what a
compiled small derivative does (bench/service.py measures a 50×50 Jacobian and
a 10-input gradient). These routes need none of it: the body is JSON, the
endpoint's schema (``core.endpoints``) checks its structure, and
``Dispatcher.submit_async`` does the rest. Everything else
(functions, black boxes, health, metrics, the OpenAPI document, unknown
paths) goes on to the framework. Telemetry, the API-key check and the body cap
are ASGI middleware around both, so they hold here as everywhere; the JSON
``Content-Type`` (``content_type``) is checked here, and by ``RequireJson`` in
front of the framework's routes that read a body.

Most bodies are a function, a point and perhaps the options every endpoint shares
(``constants``, ``wrt``, ``mode``, ``verify``, ``encoding``), each in the one form the
schema takes as it is: ``plain_request`` reads those directly, without building a
pydantic model and converting it (~6 us of a ~60 us warm gradient); anything else,
including every body the schema refuses, goes through the schema, so refusals are
worded by pydantic as before.
"""

from __future__ import annotations

from typing import get_args

from derivd.core import ENDPOINTS, Request
from derivd.core.schemas import DerivRequest
from derivd.errors import DerivdError
from derivd.gateway import codecs
from derivd.gateway.content_type import not_json
from derivd.gateway.http import (BodyTooLarge, error_response, parse_json, send_json, server_timing, too_large,
                                 validate)


def _arrays(d: dict, where: str, integers: bool = False) -> dict:
    return {k: codecs.decode(v, f"{where}.{k}", integers) for k, v in d.items()}


def to_request(m) -> Request:
    """A validated request model -> the core's request, arrays decoded (and checked) by numpy."""
    fields = m.__dict__  # the endpoint's own fields (a missing one through getattr costs a pydantic miss)
    v, vs, u, pattern = fields.get("v"), fields.get("vs"), fields.get("u"), fields.get("pattern")
    constants = m.constants
    return Request(
        function=m.function, at=_arrays(m.at, "at"),
        constants=_arrays(constants, "constants", True) if constants else {},
        wrt=m.wrt, mode=m.mode, fd=m.fd.model_dump() if m.fd else None, verify=m.verify,
        v=_arrays(v, "v") if v is not None else None,
        vs=[_arrays(d, f"vs[{i}]") for i, d in enumerate(vs)] if vs else None,
        u=codecs.decode(u, "u") if u is not None else None,
        order=fields.get("order"), sparse=fields.get("sparse", False),
        pattern=pattern.model_dump() if pattern is not None else None,
    )


# The fields every endpoint's schema shares, and the values of its literal ones.
SHARED = frozenset(DerivRequest.model_fields) - {"fd"}  # fd's options take the schema's defaults
MODES, ENCODINGS = (frozenset(get_args(DerivRequest.model_fields[f].annotation)) for f in ("mode", "encoding"))


def plainly_read(schema) -> bool:
    """Whether a body of ``SHARED`` fields alone can be valid for ``schema``: it requires no other."""
    return all(not f.is_required() for name, f in schema.model_fields.items() if name not in SHARED)


def plain_request(body) -> tuple[Request, bool] | None:
    """``body`` (parsed JSON) as the core's request, and whether it asks for base64 arrays, when it
    holds only ``SHARED`` fields, each of the type the schema would take unchanged (a str list for
    ``wrt``, a bool for ``verify``, ...); else None, and the endpoint's schema validates it. The
    request equals ``to_request`` of the validated model (tests/gateway/test_plain_requests.py)."""
    if type(body) is not dict or not body.keys() <= SHARED:
        return None
    function, at, constants = body.get("function"), body.get("at", {}), body.get("constants", {})
    wrt, mode, verify = body.get("wrt"), body.get("mode", "auto"), body.get("verify", False)
    encoding = body.get("encoding", "list")
    if (type(function) is not dict or type(at) is not dict or type(constants) is not dict
            or type(verify) is not bool or type(mode) is not str or mode not in MODES
            or type(encoding) is not str or encoding not in ENCODINGS):
        return None
    if wrt is not None and (type(wrt) is not list or any(type(w) is not str for w in wrt)):
        return None
    req = Request(function=function, at=_arrays(at, "at"),
                  constants=_arrays(constants, "constants", True) if constants else {},
                  wrt=wrt, mode=mode, verify=verify)
    return req, encoding == "base64"


class DerivativeRoutes:
    """ASGI: serves ``/v1/{endpoint}`` and its unversioned alias for every row of the endpoint
    table; passes any other request to ``app``."""

    def __init__(self, app, dispatcher, settings):
        self.app, self.dispatcher, self.settings = app, dispatcher, settings
        self.routes = {}
        for row in ENDPOINTS.values():
            plain = plainly_read(row.schema)
            for path in (f"/v1/{row.name}", f"/{row.name}"):
                self.routes[path] = (row, path, plain)

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        row, path, plain = route
        state = scope.setdefault("state", {})
        state["route"] = path
        try:
            if scope["method"] != "POST":
                raise DerivdError(f"{path} takes POST", code="method_not_allowed", status=405)
            unsupported = not_json(scope)  # checked here, not by a layer in front of every request
            if unsupported is not None:
                raise unsupported
            status, body, timing = 200, *await self._serve(row, plain, receive, state)
        except Exception as e:
            refused = error_response(e)
            if refused is None:
                raise  # GatewayMiddleware logs it and answers 500
            (status, body), timing = refused, server_timing(0, 0, 0)
        await send_json(send, status, body, timing.encode())

    async def _serve(self, row, plain: bool, receive, state: dict) -> tuple[bytes, str]:
        body = parse_json(await self._body(receive))
        read = plain_request(body) if plain else None
        if read is None:
            m = validate(row.schema, body)
            read = to_request(m), m.encoding == "base64"
        req, base64 = read
        resp, timings = await self.dispatcher.submit_async(row.name, req)
        state["engine"] = resp.get("engine", "")
        state["timings"] = (timings.compile, timings.queue, timings.compute)
        body = codecs.dumps(codecs.encode(resp, base64))
        return body, server_timing(timings.compile, timings.queue, timings.compute, resp.get("tier"))

    async def _body(self, receive) -> bytes:
        try:
            message = await receive()
            if not message.get("more_body"):  # the whole body at once, as a small request comes
                return message.get("body", b"")
            chunks = [message.get("body", b"")]
            while message.get("more_body"):
                message = await receive()
                chunks.append(message.get("body", b""))
        except BodyTooLarge as e:
            raise too_large(e.args[0], self.settings.max_request_bytes) from None
        return b"".join(chunks)
