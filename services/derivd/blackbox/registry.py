"""Where black-box registrations live.

In Redis when ``redis_url`` is set, so every gateway sees the same black
boxes; else in the data directory's SQLite store (``cache.LocalStore``), so
registrations survive restarts and the gateway processes of one machine share
them; with neither (``data_dir`` "none"), in this process's memory. All run the
SSRF check on :meth:`register`, so a refused URL is never stored and the
registrant hears why at once rather than on the first derivative request.
Re-registering a name replaces the old registration.

Whoever can write to Redis or to the data directory must not be able to point
a registered name at a URL of their choosing, nor read its credentials. So an
entry there is sealed like a tape (``cache/signing``: HMAC-SHA256 under
``tape_cache_hmac_key``, or the data directory's own key, over the entry's key
and the payload) and its headers are encrypted (AES-GCM, key derived from the
same secret). An entry that fails either check is never served: ``get``
refuses it with ``registry_tampered`` and logs it, ``list`` leaves it out and
logs it; registering the name again replaces it.
Without an HMAC key nothing is stored in or read from Redis (503 saying which
setting is missing), as Redis itself refuses outside clients in protected mode
rather than serve them unauthenticated.
"""

import base64
import builtins
import logging
import sqlite3
import threading
from contextlib import contextmanager
from typing import Protocol

import orjson
import redis
from pydantic import ValidationError

from ..cache.local_store import LocalStore
from ..cache.signing import TamperedEntry, decrypt, encrypt, open_entry, seal
from ..config import Settings, get_settings
from ..errors import DerivdError, NotFound
from .spec import BlackBoxSpec
from .ssrf import check_url

DEFAULT_REDIS_KEY = "derivd:blackboxes"
HEADERS_PURPOSE = "blackbox headers"

log = logging.getLogger("derivd.blackbox")


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


class SealedRegistry:
    """Registrations kept outside this process, each sealed and its headers encrypted (``signing``);
    where they are kept is the subclass's: ``_write``, ``_read``, ``_read_all``, ``_remove``, each
    inside ``_store_errors`` (a failing store is a 503)."""

    stored_in = ""  # where entries live, for messages: "Redis", "the data directory"

    def __init__(self, settings: Settings | None, secret: bytes | None):
        self._settings = settings or get_settings()
        self._secret = secret

    def register(self, spec: BlackBoxSpec) -> BlackBoxSpec:
        check_url(spec.url, self._settings)
        entry = self._seal(spec)
        with self._store_errors():
            self._write(spec.name, entry)
        return spec

    def get(self, name: str) -> BlackBoxSpec:
        secret = self._require_secret()
        with self._store_errors():
            raw = self._read(name)
        if raw is None:
            raise _not_found(name)
        return self._load(secret, name, raw)

    def list(self) -> builtins.list[BlackBoxSpec]:
        secret = self._require_secret()
        with self._store_errors():
            entries = self._read_all()
        specs = []
        for name, raw in sorted(entries):
            try:
                specs.append(self._load(secret, name, raw))
            except DerivdError:
                pass  # logged by _load; one bad entry must not hide the others
        return specs

    def delete(self, name: str) -> None:
        with self._store_errors():
            removed = self._remove(name)
        if not removed:
            raise _not_found(name)

    def _require_secret(self) -> bytes:
        if self._secret is None:
            raise DerivdError(
                "black boxes are kept in Redis only signed, and tape_cache_hmac_key is not set: "
                "set DERIVD_TAPE_CACHE_HMAC_KEY (the same on every gateway)",
                code="registry_unavailable", status=503,
            )
        return self._secret

    def _seal(self, spec: BlackBoxSpec) -> bytes:
        secret = self._require_secret()
        where = self._entry_key(spec.name)
        headers = encrypt(secret, HEADERS_PURPOSE, where, orjson.dumps(spec.headers))
        doc = {**spec.public(), "headers": base64.b64encode(headers).decode()}
        return seal(secret, where, orjson.dumps(doc))

    def _load(self, secret: bytes, name: str, raw: bytes) -> BlackBoxSpec:
        where = self._entry_key(name)
        try:
            doc = orjson.loads(open_entry(secret, where, raw))
            headers = orjson.loads(decrypt(secret, HEADERS_PURPOSE, where, base64.b64decode(doc["headers"])))
            spec = BlackBoxSpec.model_validate({**doc, "headers": headers})
        except TamperedEntry as exc:
            log.error("black-box registration %r in %s refused: %s (altered there, or written "
                      "without this server's key)", name, self.stored_in, exc)
            raise DerivdError(
                f"the stored registration of black box {name!r} fails its signature check (altered in "
                f"{self.stored_in}, or written without this server's key); it is not used: register it again",
                code="registry_tampered", status=500, blackbox=name,
            ) from None
        except (ValidationError, KeyError, TypeError, ValueError):
            # A value another (older or newer) gateway wrote may not validate
            # here; say which entry rather than failing with a stack trace.
            log.error("black-box registration %r in %s is unreadable", name, self.stored_in)
            raise DerivdError(
                f"stored registration of black box {name!r} is unreadable",
                code="registry_corrupt", status=500, blackbox=name,
            ) from None
        return spec


class RedisRegistry(SealedRegistry):
    """Registrations in one Redis hash (name -> sealed entry), shared by all gateways.

    Socket timeouts are short so an unreachable Redis fails a request with a
    clear 503 instead of holding it until the request deadline.
    """

    stored_in = "Redis"

    def __init__(
        self,
        url: str,
        settings: Settings | None = None,
        key: str = DEFAULT_REDIS_KEY,
        socket_timeout_s: float = 2.0,
    ):
        settings = settings or get_settings()
        hmac_key = settings.tape_cache_hmac_key
        super().__init__(settings, hmac_key.get_secret_value().encode() if hmac_key is not None else None)
        self._key = key
        if self._secret is None:
            log.warning("redis_url is set but tape_cache_hmac_key is not: black boxes cannot be registered "
                        "(entries in Redis must be signed); set DERIVD_TAPE_CACHE_HMAC_KEY on every gateway")
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )

    def _entry_key(self, name: str) -> str:
        return f"{self._key}\n{name}"

    def _write(self, name: str, entry: bytes) -> None:
        self._redis.hset(self._key, name, entry)

    def _read(self, name: str) -> bytes | None:
        return self._redis.hget(self._key, name)

    def _read_all(self) -> builtins.list[tuple[str, bytes]]:
        return [(field.decode("utf-8", "replace"), raw) for field, raw in self._redis.hgetall(self._key).items()]

    def _remove(self, name: str) -> bool:
        return bool(self._redis.hdel(self._key, name))

    def _store_errors(self):
        return _redis_errors_as_503()


class LocalRegistry(SealedRegistry):
    """Registrations in the data directory's SQLite store (``cache.LocalStore``), row
    ``blackbox:<name>``: kept across restarts, shared by the gateway processes of one machine."""

    stored_in = "the data directory"
    ROW = "blackbox:"

    def __init__(self, store: LocalStore, settings: Settings | None = None):
        super().__init__(settings, store.secret)
        self._store = store

    def _entry_key(self, name: str) -> str:
        return self.ROW + name

    def _write(self, name: str, entry: bytes) -> None:
        self._store.put(self._entry_key(name), entry)

    def _read(self, name: str) -> bytes | None:
        return self._store.get(self._entry_key(name))

    def _read_all(self) -> builtins.list[tuple[str, bytes]]:
        return [(key.removeprefix(self.ROW), raw) for key, raw in self._store.scan(self.ROW)]

    def _remove(self, name: str) -> bool:
        return self._store.delete(self._entry_key(name))

    @contextmanager
    def _store_errors(self):
        try:
            yield
        except sqlite3.Error as exc:
            log.error("black-box registry in %s failed: %s", self._store.path, exc)
            raise DerivdError(f"black-box registry unavailable: the data directory failed "
                              f"({type(exc).__name__})", code="registry_unavailable", status=503) from None


@contextmanager
def _redis_errors_as_503():
    """Turns any redis-py failure into the contract's error shape: 503 with ``Retry-After`` (1 s, the
    time a restarting Redis takes to load its data), as a stored function's registration does."""
    try:
        yield
    except redis.RedisError as exc:
        raise DerivdError(
            f"black-box registry unavailable: {type(exc).__name__}; retry in 1 s",
            code="registry_unavailable", status=503, retry_after_s=1.0,
        ) from None


def make_registry(settings: Settings | None = None, store: LocalStore | None = None) -> BlackBoxRegistry:
    """Redis when ``settings.redis_url`` is set (shared, durable), else the data directory's ``store``,
    else memory."""
    settings = settings or get_settings()
    if settings.redis_url:
        return RedisRegistry(settings.redis_url, settings, key=f"{settings.redis_key_prefix}:blackboxes")
    if store is not None:
        return LocalRegistry(store, settings)
    return MemoryRegistry(settings)
