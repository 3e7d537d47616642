"""The one error type clients see (CONTRACT §4): a code, a message and a detail.

Every layer raises ``DerivdError`` (or a subclass) for anything the caller can
fix; the gateway maps ``status`` to HTTP and gRPC without inspecting messages.
"""

from typing import Any


class DerivdError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None, status: int | None = None, **detail: Any):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.detail = {k: v for k, v in detail.items() if v is not None}

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class ParseError(DerivdError):
    """Text that is not a valid program; detail carries ``line`` and ``column``."""

    code = "parse_error"


class ProgramError(DerivdError):
    """A program that parses but cannot mean anything (a mask added to a number, a call with the
    wrong arguments, a static division by zero): the caller's program, so 400 like a parse error,
    never the 422 of a malformed request. ``code`` says which (type_error, bad_arguments, ...)."""

    code = "invalid_program"


class UnknownName(DerivdError):
    code = "unknown_name"


class ShapeError(DerivdError):
    code = "shape_mismatch"


class LimitExceeded(DerivdError):
    """A configured limit; detail names ``limit``, ``value`` and ``max``."""

    status = 413
    code = "limit_exceeded"


class IndexOutOfRange(DerivdError):
    code = "index_out_of_range"


class NoDerivativeRule(DerivdError):
    """A primitive lacks a rule for the transform asked for: never a silent zero."""

    status = 422
    code = "no_derivative_rule"


class NotFound(DerivdError):
    status = 404
    code = "not_found"


class ValidationFailed(DerivdError):
    status = 422
    code = "invalid_request"


class UpstreamError(DerivdError):
    status = 502
    code = "blackbox_error"


class UpstreamTimeout(DerivdError):
    status = 504
    code = "blackbox_timeout"


class DeadlineExceeded(DerivdError):
    status = 504
    code = "deadline_exceeded"


def rebuild(message: str, code: str, status: int, **detail: Any) -> DerivdError:
    """An error that crossed a process boundary (a worker's reply) as its own class again, so that a
    caller catching ``DeadlineExceeded`` catches it whichever side of the wire stopped the work."""
    kinds = {kind.code: kind for kind in _subclasses(DerivdError)}
    return kinds.get(code, DerivdError)(message, code=code, status=status, **detail)


def _subclasses(kind: type) -> list[type]:
    return [sub for direct in kind.__subclasses__() for sub in (direct, *_subclasses(direct))]
