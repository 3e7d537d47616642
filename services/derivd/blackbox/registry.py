"""Where black-box registrations live.

In memory for a single process; in Redis when ``redis_url`` is set, so every
gateway sees the same black boxes and registrations survive restarts. Both
run the SSRF check on :meth:`register`, so a refused URL is never stored and
the registrant hears why at once rather than on the first derivative request.
Re-registering a name replaces the old registration.
"""

import builtins
import threading
from contextlib import contextmanager
from typing import Protocol

import redis
from pydantic import ValidationError

from ..config import Settings, get_settings
from ..errors import DerivdError, NotFound
from .spec import BlackBoxSpec
from .ssrf import check_url

DEFAULT_REDIS_KEY = "derivd:blackboxes"


class BlackBoxRegistry(Protocol):
    def register(self, spec: BlackBoxSpec) -> BlackBoxSpec: ...
    def get(self, name: str) -> BlackBoxSpec: ...
    def list(self) -> builtins.list[BlackBoxSpec]: ...
    def delete(self, name: str) -> None: ...


def _not_found(name: str) -> NotFound:
    return NotFound(f"no black box named {name!r} is registered", blackbox=name)


class MemoryRegistry:
    """Registrations of this process only; lost when it exits."""

    def __init__(self, settings: Settings | None = None):
        self._settings = settings or get_settings()
        self._specs: dict[str, BlackBoxSpec] = {}
        self._lock = threading.Lock()

    def register(self, spec: BlackBoxSpec) -> BlackBoxSpec:
        check_url(spec.url, self._settings)
        with self._lock:
            self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> BlackBoxSpec:
        with self._lock:
            spec = self._specs.get(name)
        if spec is None:
            raise _not_found(name)
        return spec

    def list(self) -> builtins.list[BlackBoxSpec]:
        with self._lock:
            return sorted(self._specs.values(), key=lambda s: s.name)

    def delete(self, name: str) -> None:
        with self._lock:
            if self._specs.pop(name, None) is None:
                raise _not_found(name)


class RedisRegistry:
    """Registrations in one Redis hash (name -> JSON), shared by all gateways.

    Socket timeouts are short so an unreachable Redis fails a request with a
    clear 503 instead of holding it until the request deadline.
    """

    def __init__(
        self,
        url: str,
        settings: Settings | None = None,
        key: str = DEFAULT_REDIS_KEY,
        socket_timeout_s: float = 2.0,
    ):
        self._settings = settings or get_settings()
        self._key = key
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            decode_responses=True,
        )

    def register(self, spec: BlackBoxSpec) -> BlackBoxSpec:
        check_url(spec.url, self._settings)
        with _redis_errors_as_503():
            self._redis.hset(self._key, spec.name, spec.model_dump_json())
        return spec

    def get(self, name: str) -> BlackBoxSpec:
        with _redis_errors_as_503():
            raw = self._redis.hget(self._key, name)
        if raw is None:
            raise _not_found(name)
        return self._load(name, raw)

    def list(self) -> builtins.list[BlackBoxSpec]:
        with _redis_errors_as_503():
            entries = self._redis.hgetall(self._key)
        return [self._load(name, raw) for name, raw in sorted(entries.items())]

    def delete(self, name: str) -> None:
        with _redis_errors_as_503():
            removed = self._redis.hdel(self._key, name)
        if not removed:
            raise _not_found(name)

    def _load(self, name: str, raw: str) -> BlackBoxSpec:
        # A value another (older or newer) gateway wrote may not validate
        # here; say which entry rather than failing with a stack trace.
        try:
            return BlackBoxSpec.model_validate_json(raw)
        except ValidationError:
            raise DerivdError(
                f"stored registration of black box {name!r} is unreadable",
                code="registry_corrupt", status=500, blackbox=name,
            ) from None


@contextmanager
def _redis_errors_as_503():
    """Turns any redis-py failure into the contract's error shape (503)."""
    try:
        yield
    except redis.RedisError as exc:
        raise DerivdError(
            f"black-box registry unavailable: {type(exc).__name__}",
            code="registry_unavailable", status=503,
        ) from None


def make_registry(settings: Settings | None = None) -> BlackBoxRegistry:
    """Redis when ``settings.redis_url`` is set (shared, durable), else memory."""
    settings = settings or get_settings()
    if settings.redis_url:
        return RedisRegistry(settings.redis_url, settings)
    return MemoryRegistry(settings)
