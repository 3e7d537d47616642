"""A circuit breaker for a shared dependency (Redis) that must never hold a request up.

Closed: calls go through. A failure opens it: for a backoff, :meth:`allow` says no at once and the
caller uses its local fallback without touching the network. When the backoff has passed, one
caller (and only one: the others still fall back) is let through as a probe (half-open); its
success closes the breaker, its failure reopens it for twice the backoff, up to a maximum. This
is Envoy's outlier ejection in miniature: eject on failure, readmit by probing, back off
exponentially, so a paused or dead Redis costs one timeout per backoff instead of one per request.

Time is ``clock.now()`` (read through the module), so a test makes a backoff pass without sleeping.
"""

from __future__ import annotations

import logging
import threading

from derivd import clock

log = logging.getLogger("derivd.breaker")


class Breaker:
    def __init__(self, name: str, backoff_s: float, max_backoff_s: float):
        self.name = name
        self.base_backoff = backoff_s
        self.max_backoff = max_backoff_s
        self._backoff = backoff_s
        self._open_until = 0.0  # the instant (clock.now()) before which calls are refused
        self._probing = False
        self._failing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a call go to the dependency now? While open, no; after the backoff, yes for one probe."""
        if not self._failing:
            return True
        with self._lock:
            if not self._failing:
                return True
            if self._probing or clock.now() < self._open_until:
                return False
            self._probing = True
            return True

    @property
    def retry_in_s(self) -> float:
        """Seconds until the backoff is over and a call may probe again (0 when closed or due)."""
        return max(0.0, self._open_until - clock.now()) if self._failing else 0.0

    def succeeded(self) -> None:
        if not self._failing:
            return
        with self._lock:
            if self._failing:
                log.info("%s reachable again", self.name)
            self._failing = self._probing = False
            self._backoff = self.base_backoff

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._probing:  # the probe failed: wait twice as long before the next
                self._backoff = min(self._backoff * 2, self.max_backoff)
            self._open_until = clock.now() + self._backoff
            if not self._failing or self._probing:
                log.warning("%s unavailable (%s: %s); falling back, next try in %.2f s",
                            self.name, type(error).__name__, error, self._backoff)
            self._failing = True
            self._probing = False
