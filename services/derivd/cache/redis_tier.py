"""Redis behind a circuit breaker (``derivd.breaker``): a cache tier that never holds a request up.

Every command has short socket timeouts (``redis_socket_timeout_s``, 50 ms by
default). A failure (refused, reset, timed out) opens the breaker: for a
backoff the tier answers "miss" and skips writes without touching the network,
so requests go on with the local cache. After the backoff one command tries
Redis again (half-open); success closes the breaker, another failure doubles
the backoff up to ``redis_retry_backoff_max_s``. Redis coming back is
therefore noticed within one backoff, never disabled for good.

Values are sealed (``signing``): ``get_sealed`` returns a payload only once its
MAC is checked, and the tier exists only when an HMAC key is configured, since
unsigned entries would let anyone who can write to Redis feed us graphs.
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from derivd.breaker import Breaker
from derivd.cache.signing import open_entry, seal

log = logging.getLogger("derivd.cache")


class RedisTier:
    down = "Redis is unreachable"  # why a write failed, for the caller's 503

    @classmethod
    def from_settings(cls, settings) -> "RedisTier | None":
        """The tier for ``redis_url``, or None without Redis or without an HMAC key (local cache only)."""
        if not settings.redis_url:
            return None
        if settings.tape_cache_hmac_key is None:
            log.warning("redis_url is set but tape_cache_hmac_key is not: nothing is shared through Redis "
                        "(entries must be signed); set DERIVD_TAPE_CACHE_HMAC_KEY on every gateway and worker")
            return None
        return cls(settings.redis_url, settings.tape_cache_hmac_key.get_secret_value().encode(), settings)

    def __init__(self, url: str, secret: bytes, settings):
        self.url = url
        self.secret = secret
        self.prefix = settings.redis_key_prefix
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=settings.redis_socket_timeout_s,
            socket_connect_timeout=settings.redis_connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # the breaker decides when to try again, not the client
            health_check_interval=0,
        )
        self.breaker = Breaker(f"redis {_safe(url)} (shared cache and stored functions)",
                               settings.redis_retry_backoff_s, settings.redis_retry_backoff_max_s)

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed within the current backoff)."""
        return self.retry_in_s == 0

    @property
    def retry_in_s(self) -> float:
        """Seconds until the breaker lets Redis be tried again (0 when it is closed)."""
        return self.breaker.retry_in_s

    def get_sealed(self, key: str, refresh_ttl_s: int | None = None) -> bytes | None:
        """The payload at ``key`` once its MAC checks (``TamperedEntry`` if not); None on a miss or
        while Redis is unreachable. ``refresh_ttl_s`` restarts the entry's TTL (GETEX)."""
        if refresh_ttl_s is None:
            entry = self._call(lambda: self.client.get(key))
        else:
            entry = self._call(lambda: self.client.getex(key, ex=refresh_ttl_s))
        return None if entry is None else open_entry(self.secret, key, entry)

    def set_sealed(self, key: str, payload: bytes, ttl_s: int) -> bool:
        """Store sealed with a TTL; False when Redis is unreachable (the value just stays local)."""
        entry = seal(self.secret, key, payload)
        return bool(self._call(lambda: self.client.set(key, entry, ex=ttl_s)))

    def _call(self, command):
        if not self.breaker.allow():
            return None
        try:
            result = command()
        except redis.RedisError as e:
            self.breaker.failed(e)
            return None
        except BaseException as e:  # not Redis's failure, but the try (maybe the probe) is over
            self.breaker.failed(e)
            raise
        self.breaker.succeeded()
        return result


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
