"""API keys and a per-key rate limit, for both skins.

Keys: with ``settings.api_keys`` empty the service is open; otherwise every
request (health, readiness and metrics aside) must carry one of them in
``X-API-Key`` (gRPC: metadata ``x-api-key``), compared with
``hmac.compare_digest`` against every configured key so the time taken says
nothing about which key, or how much of one, matched. Failure: 401
``unauthorized``.

Rate limit: at most ``rate_limit_requests`` per ``rate_limit_window_s`` per
key (per client address when the service is open), a fixed window: the
count for window ``w = floor(t / window)`` is one Redis key, incremented and
given its expiry by one Lua script, so it is atomic across gateways. Without
Redis (or while it is unreachable: short timeouts, the request goes on) the
count is kept in this process. Over the limit: 429 ``rate_limited`` naming the
limit, with ``retry_after_s``. Keys never reach Redis in clear: the Redis
key holds a SHA-256 prefix of the identity.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time

from derivd.errors import DerivdError

log = logging.getLogger("derivd.auth")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REDIS_TIMEOUT_S = 0.1  # a slow Redis costs each request at most this, then the local count takes over

# KEYS[1]: the window's counter; ARGV[1]: window in ms. Returns {count, ms left in the window}.
_INCR_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


class Unauthorized(DerivdError):
    status = 401
    code = "unauthorized"


class RateLimited(DerivdError):
    status = 429
    code = "rate_limited"


class AccessControl:
    def __init__(self, settings, redis_client=None):
        self.keys = [k.encode() for k in settings.api_keys]
        self.limit = settings.rate_limit_requests
        self.window = settings.rate_limit_window_s
        self._redis = redis_client
        if self._redis is None and self.limit and settings.redis_url:
            import redis

            self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                               socket_connect_timeout=REDIS_TIMEOUT_S)
        self._script = self._redis.register_script(_INCR_SCRIPT) if self._redis is not None else None
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.limit > 0

    @property
    def uses_redis(self) -> bool:
        return self._script is not None

    def check(self, api_key: str | None, client: str) -> None:
        """Raise ``Unauthorized`` or ``RateLimited``, or return: the request may go on."""
        if self.keys:
            given = (api_key or "").encode()
            matched = False
            for key in self.keys:
                matched |= hmac.compare_digest(key, given)
            if not matched:
                raise Unauthorized("missing or unknown API key: send a valid one in the X-API-Key header",
                                   header="X-API-Key")
            identity = "key:" + api_key
        else:
            identity = "client:" + client
        if self.limit > 0:
            self._admit(identity)

    def _admit(self, identity: str) -> None:
        now = time.time()
        window = math.floor(now / self.window)
        count, left = self._count_redis(identity, window) if self._script is not None else (None, None)
        if count is None:
            count, left = self._count_local(identity, window, now)
        if count > self.limit:
            raise RateLimited(f"rate limit exceeded: at most {self.limit} requests per {self.window:g} s "
                              f"(rate_limit_requests) for this {identity.split(':')[0]}",
                              limit="rate_limit_requests", value=count, max=self.limit, window_s=self.window,
                              retry_after_s=round(left, 3))

    def _count_redis(self, identity: str, window: int) -> tuple[int | None, float | None]:
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        try:
            count, ttl_ms = self._script(keys=[f"derivd:ratelimit:{digest}:{window}"],
                                         args=[int(self.window * 1000)])
        except Exception as e:  # redis down or slow: count locally rather than refuse or stall
            log.warning("rate limit: Redis unavailable (%s); counting in this process", type(e).__name__)
            return None, None
        return int(count), max(int(ttl_ms), 0) / 1000

    def _count_local(self, identity: str, window: int, now: float) -> tuple[int, float]:
        with self._lock:
            w, count = self._counts.get(identity, (window, 0))
            count = count + 1 if w == window else 1
            self._counts[identity] = (window, count)
            if len(self._counts) > 100_000:  # forget identities of past windows
                self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
        return count, (window + 1) * self.window - now
