"""Routes that read a JSON body refuse any other ``Content-Type`` (415), before reading it.

A browser sends a cross-site POST without asking first (no CORS preflight) only when its
``Content-Type`` is ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data``, or when there is none. Accepting those would let any web page make a
visitor's browser compute, store functions or register black boxes on a service reachable from
that browser and open without a key. Requiring ``application/json`` (parameters such as
``charset`` allowed) closes it, as Elasticsearch made strict content-type checking mandatory
in 6.0 for the same reason.
"""

from __future__ import annotations

from derivd.errors import DerivdError
from derivd.gateway import codecs
from derivd.gateway.http import send_json

JSON_ROUTES = frozenset(f"{prefix}/{name}" for prefix in ("/v1", "") for name in ("functions", "blackboxes"))


class UnsupportedMediaType(DerivdError):
    status = 415
    code = "unsupported_media_type"


def media_type(headers) -> str | None:
    """The request's media type, lower-cased and without parameters; None when it sends none."""
    for name, value in headers:
        if name == b"content-type":
            if value == b"application/json":  # what nearly every request sends, as is
                return "application/json"
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


def not_json(scope) -> UnsupportedMediaType | None:
    """The refusal of a request whose ``Content-Type`` is not JSON, else None."""
    sent = media_type(scope["headers"])
    if sent == "application/json":
        return None
    return UnsupportedMediaType(f"POST {scope['path']} takes a JSON body: send Content-Type: application/json "
                                f"({'no Content-Type was sent' if sent is None else f'got {sent!r}'})",
                                content_type=sent)


class RequireJson:
    """ASGI: a POST to a route of ``JSON_ROUTES`` must say its body is JSON. (The derivative routes,
    served in front of this, check their own: ``DerivativeRoutes``.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in JSON_ROUTES:
            error = not_json(scope)
            if error is not None:
                return await send_json(send, error.status, codecs.dumps(error.to_body()))
        await self.app(scope, receive, send)
