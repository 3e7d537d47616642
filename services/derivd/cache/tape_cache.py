"""The tape cache: an in-process LRU in front of Redis.

Level ``local`` holds compiled functions (a lowered program and the tapes
compiled from it) in this process, least recently used out first, within
``tape_cache_bytes`` (``weigh``: the program text, every tape's source, and
``NODE_BYTES`` per node of its graph) and ``tape_cache_size`` entries. Level
``redis`` holds *graphs*, shared by every gateway and worker pointed at the
same Redis: the lowered program (``xf=lower``) and each transform's graph
(``xf=vjp(...)``, ...), in the canonical JSON of ``ir.serialize``, sealed
with HMAC-SHA256 under ``tape_cache_hmac_key`` and a TTL (``tape_ttl_s``).

What comes back from Redis is checked before it is decoded (the MAC), then
rebuilt node by node through ``Graph.apply`` (shapes re-inferred, primitive
names checked against the registry); the caller compiles it with our own
code generator. No pickle, no code from Redis is ever executed. An entry that
fails either check is counted as ``rejected``, logged, and treated as a miss:
the caller builds the tape again and overwrites it.

Without a ``RedisTier`` (no ``redis_url``, or no HMAC key: unsigned entries
are never shared) only the local level exists. A Redis that is down or slow is
skipped by the tier's breaker, so it costs a request at most one short timeout.
"""

from __future__ import annotations

import logging
import threading

from derivd.cache.keys import TapeKey
from derivd.cache.lru import BoundedLRU
from derivd.cache.redis_tier import RedisTier
from derivd.cache.signing import TamperedEntry
from derivd.ir import serialize

log = logging.getLogger("derivd.cache")

LEVELS = ("local", "redis")
# What one IR node costs in memory, with its params and inputs (measured: ~300-500 bytes), and what a
# line of compiled tape costs beside its text (its code object): weights, not exact counts.
NODE_BYTES = 512
CODE_FACTOR = 3


def weigh(compiled) -> int:
    """Bytes a compiled function holds: its text, its graph (which transforms grow) and its tapes."""
    graph = getattr(compiled, "graph", None)
    tapes = getattr(compiled, "_tapes", {})
    return (len(getattr(compiled, "source", "")) + NODE_BYTES * len(getattr(graph, "nodes", ()))
            + CODE_FACTOR * sum(len(t.source) for t in list(tapes.values())))
RESULTS = ("hit", "miss", "rejected")


class CacheStats:
    """Counts of lookups by level and result; ``drain`` hands over the counts not yet reported.

    A worker process drains its counts into each response, and the gateway adds
    them to its own, so the gateway's ``/metrics`` sees the cache of its pools.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.totals = {(lv, r): 0 for lv in LEVELS for r in RESULTS}
        self._unreported = dict.fromkeys(self.totals, 0)

    def count(self, level: str, result: str, n: int = 1) -> None:
        with self._lock:
            self.totals[level, result] += n
            self._unreported[level, result] += n

    def hits_misses(self, level: str) -> tuple[int, int]:
        """(hits, misses) of ``level``; a rejected entry was a miss too."""
        t = self.totals
        return t[level, "hit"], t[level, "miss"] + t[level, "rejected"]

    def drain(self) -> dict[str, int]:
        with self._lock:
            out = {f"{lv}.{r}": n for (lv, r), n in self._unreported.items() if n}
            self._unreported = dict.fromkeys(self.totals, 0)
        return out

    def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            level, _, result = name.partition(".")
            if (level, result) in self.totals and n > 0:
                self.count(level, result, n)


class TapeCache:
    def __init__(self, settings, redis: RedisTier | None = None, stats: CacheStats | None = None):
        self.settings = settings
        self.redis = redis
        self.stats = stats or CacheStats()
        self._items = BoundedLRU(settings.tape_cache_bytes, settings.tape_cache_size, weigh)

    # ------------------------------------------------------------ local level

    def get(self, key: TapeKey):
        """The compiled function at ``key`` from this process's LRU (counted as a hit), or None (a miss:
        the caller compiles it, not under any lock, and ``put``s it)."""
        value = self._items.get(key)
        self.stats.count("local", "miss" if value is None else "hit")
        return value

    def put(self, key: TapeKey, value) -> None:
        self._items.put(key, value)

    @property
    def hits(self) -> int:
        return self.stats.hits_misses("local")[0]

    @property
    def misses(self) -> int:
        return self.stats.hits_misses("local")[1]

    # ------------------------------------------------------------ shared level

    def load(self, key: TapeKey):
        """``(graph, inputs, outputs)`` stored at ``key`` by any process, or None (miss, refused, no Redis)."""
        if self.redis is None:
            return None
        name = key.render(self.redis.prefix)
        try:
            payload = self.redis.get_sealed(name)
            if payload is None:
                self.stats.count("redis", "miss")
                log.debug("tape cache redis miss %s", name)
                return None
            loaded = serialize.from_json(payload, self.settings)
        except (TamperedEntry, serialize.GraphFormatError) as e:
            self.stats.count("redis", "rejected")
            log.warning("tape cache entry %s refused (%s); compiling it again", name, e)
            return None
        self.stats.count("redis", "hit")
        log.info("tape cache redis hit %s", name)
        return loaded

    def store(self, key: TapeKey, graph, inputs: list, outputs: list) -> None:
        """Share a graph: sealed, with a TTL; skipped when Redis is away or the entry is too large."""
        if self.redis is None or not self.redis.available:
            return
        name = key.render(self.redis.prefix)
        try:
            payload = serialize.dumps(graph, outputs, inputs)
        except TypeError as e:  # a param with no JSON form: this tape stays local
            log.warning("tape cache entry %s not shared: %s", name, e)
            return
        if len(payload) > self.settings.tape_cache_max_entry_bytes:
            log.info("tape cache entry %s not shared: %d bytes is over tape_cache_max_entry_bytes", name,
                     len(payload))
            return
        if self.redis.set_sealed(name, payload, self.settings.tape_ttl_s):
            log.info("tape cache stored %s (%d bytes, ttl %d s)", name, len(payload), self.settings.tape_ttl_s)
