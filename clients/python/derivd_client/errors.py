"""Typed exceptions for the contract's error body (CONTRACT §4).

The server answers every failure with ``{"error": {"code", "message",
"detail"}}`` and a 4xx (the caller's fault) or 5xx/504 (ours or a black
box's). :func:`from_response` picks the most specific class: first by
``code``, then by the status family, so a code the SDK has never heard of
still lands in the right family (``ClientError`` or ``ServerError``).
Failures that never reached the server are :class:`TransportError`.
"""

from __future__ import annotations

from typing import Any


class DerivdError(Exception):
    """Base of every SDK error: ``.code``, ``.message``, ``.detail`` and ``.status`` (None off the wire)."""

    def __init__(self, message: str, code: str = "error", detail: dict[str, Any] | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail or {}
        self.status = status

    def __str__(self) -> str:
        head = f"[{self.status} {self.code}]" if self.status else f"[{self.code}]"
        return f"{head} {self.message}"


# ---------------------------------------------------------------- 4xx: the caller can fix it

class ClientError(DerivdError):
    """A 4xx: the request was refused and sending it again will not help."""


class InvalidRequest(ClientError):
    """Structure, types or arguments the server could not accept (422 ``invalid_request`` and kin)."""


class ParseError(ClientError):
    """Program text outside the language; ``detail`` carries ``line`` and ``column``."""


class UnknownName(ClientError):
    """An unbound input, an unknown function, or a ``wrt`` naming something not in ``at``."""


class ShapeError(ClientError):
    """Shapes that do not fit; ``detail`` names both where the server knows them."""


class IndexOutOfRange(ShapeError):
    pass


class LimitExceeded(ClientError):
    """A configured limit (413); ``detail`` names ``limit``, ``value`` and ``max``."""


class NotFound(ClientError):
    """An unknown function id or black-box name (404)."""


class NoDerivativeRule(ClientError):
    """An operation without a rule for the transform asked for: never a silent zero."""


class BlackboxRefused(ClientError):
    """A black-box URL refused by the server's allow-list."""


# ---------------------------------------------------------------- 5xx: ours or the black box's

class ServerError(DerivdError):
    """A 5xx: the server (or a black box behind it) failed."""


class NotImplementedOnServer(ServerError):
    """501: this server build does not offer the endpoint or mode yet."""


class UpstreamError(ServerError):
    """502: a black box answered wrongly or failed after the server's retries."""


class DeadlineExceeded(ServerError):
    """504: the request, or a black box, ran past its deadline on the server."""


class UpstreamTimeout(DeadlineExceeded):
    """504 from a black box slower than its ``timeout_s``."""


# ---------------------------------------------------------------- no answer at all

class TransportError(DerivdError):
    """The request got no HTTP answer (``status`` is None)."""


class ConnectionFailed(TransportError):
    """Could not connect, or the connection dropped, after every retry."""


class RequestTimeout(TransportError):
    """No answer within the client's ``timeout`` (not retried: the work may still be running)."""


BY_CODE: dict[str, type[DerivdError]] = {
    "parse_error": ParseError,
    "unsupported_syntax": ParseError,
    "unknown_name": UnknownName,
    "shape_mismatch": ShapeError,
    "not_scalar": ShapeError,
    "index_out_of_range": IndexOutOfRange,
    "limit_exceeded": LimitExceeded,
    "not_found": NotFound,
    "unknown_function": NotFound,
    "no_derivative_rule": NoDerivativeRule,
    "blackbox_refused": BlackboxRefused,
    "invalid_request": InvalidRequest,
    "invalid_json": InvalidRequest,
    "type_error": InvalidRequest,
    "bad_arguments": InvalidRequest,
    "unsupported_mode": InvalidRequest,
    "not_implemented": NotImplementedOnServer,
    "blackbox_error": UpstreamError,
    "blackbox_timeout": UpstreamTimeout,
    "deadline_exceeded": DeadlineExceeded,
}


def from_response(status: int, body: Any) -> DerivdError:
    """The exception for an HTTP error answer, whatever its body holds."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return _family(status)(f"HTTP {status} without the contract's error body", "http_error", {}, status)
    code = str(err.get("code", "error"))
    message = str(err.get("message", ""))
    detail = err.get("detail") if isinstance(err.get("detail"), dict) else {}
    cls = BY_CODE.get(code)
    if cls is None or not issubclass(cls, _family(status)):
        cls = _family(status)
    return cls(message, code, detail, status)


def _family(status: int) -> type[DerivdError]:
    if status == 501:
        return NotImplementedOnServer
    if status == 502:
        return UpstreamError
    if status == 504:
        return DeadlineExceeded
    if 400 <= status < 500:
        return ClientError
    if status >= 500:
        return ServerError
    return DerivdError
