"""API keys, a per-key rate limit and a limit on failed authentications, for both skins.

Keys: with ``settings.api_keys`` empty the service is open; otherwise every
request (health, readiness and metrics aside) must carry one of them in
``X-API-Key`` (gRPC: metadata ``x-api-key``), compared with
``hmac.compare_digest`` against every configured key so the time taken says
nothing about which key, or how much of one, matched. Failure: 401
``unauthorized``.

Failed authentications are counted per client address: past
``auth_failures_max`` in ``auth_failures_window_s`` the client is refused with
429 until the window ends, *before* its key is looked at, so a guesser learns
nothing more (not even from a right guess) and costs us nothing. This is the
fail2ban rule GitLab applies to its API and Git endpoints: ban the address, not
the key, after repeated failures.

Rate limit: at most ``rate_limit_requests`` per ``rate_limit_window_s`` per
key (per client address when the service is open), a fixed window: the
count for window ``w = floor(t / window)`` is one Redis key, incremented and
given its expiry by one Lua script, so it is atomic across gateways. Keys
never reach Redis in clear: the Redis key holds a SHA-256 prefix of the
identity (``<redis_key_prefix>:ratelimit:<digest>:<window>``). Over the
limit: 429 ``rate_limited`` naming the limit, with ``retry_after_s``.

Without Redis the count is kept in this process. Redis behind a circuit
breaker (``breaker.Breaker``): a failed or slow command (``REDIS_TIMEOUT_S``)
opens it, and for a backoff (``redis_retry_backoff_s`` doubling to
``redis_retry_backoff_max_s``) every request is counted in this process at
once; then one request probes Redis. The local count of an identity starts
from the last count Redis gave it in the window (a paused Redis must not hand
out a fresh allowance), and what was counted locally is added to Redis by the
first command that reaches it again, so the shared count stays whole. During
an outage each gateway enforces the limit on what it knows (the last shared
count plus its own requests), as Envoy's local rate limit backs up its global
one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import threading
import time

from derivd.breaker import Breaker
from derivd.errors import DerivdError

log = logging.getLogger("derivd.auth")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REDIS_TIMEOUT_S = 0.1  # a slow Redis costs each request at most this, then the local count takes over

# KEYS[1]: the window's counter; ARGV[1]: window in ms, ARGV[2]: requests to add (this one and
# those counted locally while Redis was away). Returns {count, ms left in the window}.
_INCR_SCRIPT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
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
        self.failures_max = settings.auth_failures_max if self.keys else 0
        self.failures_window = settings.auth_failures_window_s
        self.prefix = settings.redis_key_prefix
        self._redis = redis_client
        if self._redis is None and (self.limit or self.failures_max) and settings.redis_url:
            import redis

            self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                               socket_connect_timeout=REDIS_TIMEOUT_S)
        self._script = self._redis.register_script(_INCR_SCRIPT) if self._redis is not None else None
        self._breaker = Breaker("rate limit: Redis", settings.redis_retry_backoff_s,
                                settings.redis_retry_backoff_max_s)
        # identity -> (end of its window, count in it as far as this process knows, requests not in Redis)
        self._counts: dict[str, tuple[float, int, int]] = {}
        self._banned: dict[str, float] = {}  # client -> time.time() until which it is refused
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
            self._refuse_if_banned(client)
            given = (api_key or "").encode()
            matched = False
            for key in self.keys:
                matched |= hmac.compare_digest(key, given)
            if not matched:
                self._failed_authentication(client)
                raise Unauthorized("missing or unknown API key: send a valid one in the X-API-Key header",
                                   header="X-API-Key")
        self._limit(self._identity(api_key, client))

    def charge(self, api_key: str | None, client: str) -> None:
        """Count one more request of a caller ``check`` let in against the rate limit (``RateLimited`` past
        it): a session socket's ask, as the SDK pipelines unary calls there, so a connection is no way
        around the limit."""
        self._limit(self._identity(api_key, client))

    def _identity(self, api_key: str | None, client: str) -> str:
        return "key:" + (api_key or "") if self.keys else "client:" + client

    def _limit(self, identity: str) -> None:
        if self.limit > 0:
            count, left = self._count(identity, self.window)
            if count > self.limit:
                raise RateLimited(f"rate limit exceeded: at most {self.limit} requests per {self.window:g} s "
                                  f"(rate_limit_requests) for this {identity.split(':')[0]}",
                                  limit="rate_limit_requests", value=count, max=self.limit,
                                  window_s=self.window, retry_after_s=round(left, 3))

    def _refuse_if_banned(self, client: str) -> None:
        until = self._banned.get(client)
        if until is None:
            return
        left = until - time.time()
        if left <= 0:
            with self._lock:
                self._banned.pop(client, None)
            return
        raise RateLimited(f"too many failed authentications from this client: at most {self.failures_max} per "
                          f"{self.failures_window:g} s (auth_failures_max); try again later",
                          limit="auth_failures_max", max=self.failures_max, window_s=self.failures_window,
                          retry_after_s=round(left, 3))

    def _failed_authentication(self, client: str) -> None:
        if not self.failures_max:
            return
        count, left = self._count("authfail:" + client, self.failures_window)
        if count > self.failures_max:
            with self._lock:
                if len(self._banned) > 100_000:  # forget bans that have ended
                    now = time.time()
                    self._banned = {c: t for c, t in self._banned.items() if t > now}
                self._banned[client] = time.time() + left
            self._refuse_if_banned(client)

    def _count(self, identity: str, window_s: float) -> tuple[int, float]:
        """This request's number in its window for ``identity``, and the seconds left in the window:
        from Redis when the breaker lets us, else from what this process knows."""
        now = time.time()
        window = math.floor(now / window_s)
        ends = (window + 1) * window_s
        if self._script is not None and self._breaker.allow():
            pending = self._known(identity, ends)[1]
            shared = self._count_redis(identity, window, window_s, 1 + pending)
            if shared is not None:
                with self._lock:
                    known, unsynced = self._known(identity, ends)
                    unsynced = max(unsynced - pending, 0)  # counted here while the command was on its way
                    self._store(identity, ends, max(known, shared[0] + unsynced), unsynced, now)
                return shared
        with self._lock:
            known, unsynced = self._known(identity, ends)
            self._store(identity, ends, known + 1, unsynced + 1 if self._script is not None else 0, now)
        return known + 1, ends - now

    def _count_redis(self, identity: str, window: int, window_s: float, add: int) -> tuple[int, float] | None:
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        try:
            count, ttl_ms = self._script(keys=[f"{self.prefix}:ratelimit:{digest}:{window}"],
                                         args=[int(window_s * 1000), add])
        except Exception as e:  # redis down or slow: count locally rather than refuse or stall
            self._breaker.failed(e)
            return None
        self._breaker.succeeded()
        return int(count), max(int(ttl_ms), 0) / 1000

    def _known(self, identity: str, ends: float) -> tuple[int, int]:
        """(count, requests not yet added to Redis) this process holds for the window ending at ``ends``."""
        held, count, unsynced = self._counts.get(identity, (ends, 0, 0))
        return (count, unsynced) if held == ends else (0, 0)

    def _store(self, identity: str, ends: float, count: int, unsynced: int, now: float) -> None:
        """Under the lock: remember a count; past 100,000 identities, forget windows that have ended."""
        self._counts[identity] = (ends, count, unsynced)
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
