"""What every REST response shares, with or without the framework: JSON bodies, the contract's
error bodies, ``Server-Timing``, and reading a capped body."""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from derivd.errors import DerivdError, LimitExceeded, ValidationFailed
from derivd.gateway import codecs

INTERNAL = {"error": {"code": "internal_error", "message": "internal error; it has been logged", "detail": {}}}


class BodyTooLarge(Exception):
    """Raised by the capped ``receive`` of ``GatewayMiddleware``: the body ran past ``max_request_bytes``."""


def server_timing(compile_s: float, queue_s: float, compute_s: float, tier: int | None = None) -> str:
    """The three durations, and which compile tier answered (``tier;desc="xla"``) when tier 2 is on."""
    timing = f"compile;dur={compile_s * 1e3:.3f}, queue;dur={queue_s * 1e3:.3f}, compute;dur={compute_s * 1e3:.3f}"
    if tier is not None:
        timing += f', tier;desc="{"xla" if tier == 2 else "numpy"}"'
    return timing


NO_TIMING = server_timing(0, 0, 0).encode()


async def send_json(send, status: int, body: bytes, timing: bytes = NO_TIMING, extra: tuple = ()) -> None:
    """A complete JSON response on a raw ASGI ``send``: one start message, one body message."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
        (b"server-timing", timing), *extra]})
    await send({"type": "http.response.body", "body": body})


def too_large(size: int, limit: int) -> LimitExceeded:
    return LimitExceeded(f"request body of {size} bytes is over the limit max_request_bytes={limit}",
                         limit="max_request_bytes", value=size, max=limit)


def parse_json(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise DerivdError(f"request body is not valid JSON: {e}", code="invalid_json") from None


def validate(model, body):
    """``body`` (parsed JSON) checked against a pydantic ``model``; a non-object is refused by name."""
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object")
    return model.model_validate(body)


def error_response(exc: Exception) -> tuple[int, bytes] | None:
    """The status and contract error body for a refusal (``DerivdError``, pydantic's
    ``ValidationError``); ``None`` for anything else, which is an internal error."""
    if isinstance(exc, DerivdError):
        return exc.status, codecs.dumps(exc.to_body())
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0].get("loc", ()))
        msg = f"{where}: {errors[0].get('msg')}" if where else errors[0].get("msg")
        err = ValidationFailed(f"invalid request: {msg}", field=where or None,
                               errors=[{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
                                       for e in errors[:20]])
        return 422, codecs.dumps(err.to_body())
    return None
