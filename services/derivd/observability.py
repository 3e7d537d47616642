"""Metrics and structured logs, shared by the REST and gRPC skins.

Metrics live in one ``Metrics`` object per service (its own registry, so two
services in one process, as in tests, never collide) and are served as
Prometheus text on ``GET /metrics``:

* ``derivd_requests_total{transport, route, engine, status}``: ``status`` is the
  HTTP status for both transports (a gRPC error carries the same one as REST);
* ``derivd_request_{queue,compile,compute}_seconds`` histograms: where a
  request's time went (the split of ``Server-Timing``), and
  ``derivd_request_seconds`` for the whole request as the skin saw it;
* ``derivd_requests_in_flight{transport}``;
* ``derivd_tape_cache_{hits,misses}_total{level}``: carried from the counts
  of the cache levels registered with ``add_cache_level`` (``local`` is the
  in-process LRU; a shared level such as Redis registers itself the same way);
* ``derivd_worker_restarts_total{pool}``: incremented by the pool supervisor;
* ``derivd_access_denied_total{reason}``: 401s and 429s;
* ``derivd_hvp_stream_directions_total``: directions answered on HVP streams;
* ``derivd_tier2_tapes_total{result}``: tapes whose XLA tier was accepted,
  rejected (it disagreed with numpy), unlowerable, slower than numpy, or too
  small to compile (engines/tiers.py), counted
  in the process that serves ``/metrics`` (a worker's own are in its logs).

With several gateway processes (``derivd serve --gateways N``) every metric is
kept in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``, whichever process
answers, reports the sum over all of them (in-flight: over the live ones).

Logs carry a request id that is taken from an incoming ``X-Request-Id`` when it
is a sane token and made up otherwise, and echoed in the response. They are one
JSON object per line (``JsonFormatter``) for machines, or lines for people
(``TextFormatter``: ``GET /v1/gradient 400 parse_error 0.8 ms``); the setting
``log_format`` (``DERIVD_LOG_FORMAT``) picks one, and ``auto`` picks text on a
terminal and JSON otherwise. An access line of a refusal (status 400 and up)
names the error's ``code``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Set (by ``derivd serve --gateways N``) before prometheus_client is first imported, this makes every
# metric of every process a file in the directory, summed at scrape time by whichever process answers.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

# From 100 us (a warm scalar gradient) to a minute (the default request deadline).
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)

access_log = logging.getLogger("derivd.access")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("derivd_requests", "Requests by transport, route, engine and status",
                                ["transport", "route", "engine", "status"], registry=r)
        self.latency = Histogram("derivd_request_seconds", "Whole request as the skin saw it",
                                 ["transport", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("derivd_request_queue_seconds", "Waiting for a compute thread or worker",
                               ["transport", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.compile = Histogram("derivd_request_compile_seconds", "Lowering and compiling tapes (0 on a hit)",
                                 ["transport", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("derivd_request_compute_seconds", "Running the engine",
                                 ["transport", "route", "engine"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("derivd_requests_in_flight", "Requests being served", ["transport"], registry=r,
                               multiprocess_mode="livesum")
        self.worker_restarts = Counter("derivd_worker_restarts", "Worker processes replaced by the supervisor",
                                       ["pool"], registry=r)
        self.access_denied = Counter("derivd_access_denied", "Requests refused: missing/wrong key or rate limit",
                                     ["reason"], registry=r)
        self.stream_directions = Counter("derivd_hvp_stream_directions", "Directions answered on HVP streams",
                                         registry=r)
        self.cache_hits = Counter("derivd_tape_cache_hits", "Tape-cache hits by level", ["level"], registry=r)
        self.cache_misses = Counter("derivd_tape_cache_misses", "Tape-cache misses by level", ["level"], registry=r)
        self.tier2_tapes = Counter("derivd_tier2_tapes", "Tapes by what became of their XLA tier: accepted, "
                                   "rejected (disagreed with numpy at a point), unlowerable, slower, small",
                                   ["result"], registry=r)
        self._tier2_seen: dict[str, int] = {}
        self.tier2_counts: Callable[[], dict[str, int]] = dict  # set by the core: engines.tiers.COUNTS
        self._cache_levels: dict[str, list] = {}  # level -> [stats, hits seen, misses seen, counters]
        self._cache_lock = threading.Lock()
        self._tallies: dict[tuple, _Tally] = {}
        self._tally_lock = threading.Lock()
        if MULTIPROCESS_DIR is None:
            ProcessCollector(registry=r)  # of one process: meaningless summed over several

    def add_cache_level(self, level: str, stats: Callable[[], tuple[int, int]]) -> None:
        """Expose a tape-cache level: ``stats()`` returns its (hits, misses) so far. The caches count
        for themselves; their counts are carried into the counters at each scrape (and, with several
        gateway processes, after each request, since another process may answer the scrape)."""
        with self._cache_lock:
            seen = self._cache_levels.get(level, [None, 0, 0, None, None])[1:3]
            # shown from the start, at 0
            self._cache_levels[level] = [stats, *seen, self.cache_hits.labels(level), self.cache_misses.labels(level)]

    def _sync_cache(self) -> None:
        """Carry the caches' and the compile tiers' counts of this process into the counters."""
        with self._cache_lock:
            for result, n in self.tier2_counts().items():
                seen = self._tier2_seen.get(result, 0)
                if n > seen:
                    self.tier2_tapes.labels(result).inc(n - seen)
                    self._tier2_seen[result] = n
            for entry in self._cache_levels.values():
                stats, hits_seen, misses_seen, hits_counter, misses_counter = entry
                hits, misses = stats()
                if hits > hits_seen:
                    hits_counter.inc(hits - hits_seen)
                if misses > misses_seen:
                    misses_counter.inc(misses - misses_seen)
                entry[1], entry[2] = max(hits, hits_seen), max(misses, misses_seen)

    def record(self, transport: str, route: str, engine: str, status: int, seconds: float,
               queue: float | None = None, compile: float | None = None, compute: float | None = None) -> None:
        """Count one request: into its series' tally, under one lock (prometheus_client's own
        ``inc``/``observe`` take a lock per value, eleven a request: ~3 us of a ~75 us warm
        gradient), carried into the metrics by ``_flush`` before any scrape reads them."""
        key = (transport, route, engine or "none", status)
        tally = self._tallies.get(key)
        if tally is None:  # label lookups once per combination, not per request
            t, r, e, st = key
            tally = _Tally(self.requests.labels(t, r, e, str(st)), (
                self.latency.labels(t, r), self.queue.labels(t, r), self.compile.labels(t, r),
                self.compute.labels(t, r, e)))
        with self._tally_lock:
            tally = self._tallies.setdefault(key, tally)
            tally.add(seconds, queue, compile, compute)
            if MULTIPROCESS_DIR is not None:  # another process may answer the next scrape
                tally.flush()
        if MULTIPROCESS_DIR is not None:
            self._sync_cache()

    def _flush(self) -> None:
        """Carry every series' tally into its counter and histograms."""
        with self._tally_lock:
            for tally in self._tallies.values():
                tally.flush()

    def render(self) -> bytes:
        self._flush()
        self._sync_cache()
        if MULTIPROCESS_DIR is None:
            return generate_latest(self.registry)
        everyone = CollectorRegistry()
        multiprocess.MultiProcessCollector(everyone)
        return generate_latest(everyone)


class _Tally:
    """One series' requests since the last flush: their count and, per histogram (whole, queue,
    compile, compute), the observations' sum and their counts per bucket, as prometheus_client's
    ``Histogram.observe`` keeps them (the first bucket whose bound is >= the value, +Inf last).
    A request's observations are only kept (``pending``) and put in buckets in batches of up to
    ``PENDING`` (or at the flush): a request pays one append. The caller holds the lock."""

    __slots__ = ("counter", "histograms", "count", "sums", "buckets", "pending")
    PENDING = 1024

    def __init__(self, counter, histograms: tuple):
        self.counter, self.histograms = counter, histograms
        self.count = 0
        self.sums = [0.0] * len(histograms)
        self.buckets = [[0] * (len(LATENCY_BUCKETS) + 1) for _ in histograms]
        self.pending: list[tuple] = []

    def add(self, *observed: float | None) -> None:
        self.count += 1
        self.pending.append(observed)
        if len(self.pending) >= self.PENDING:
            self._bucket()

    def _bucket(self) -> None:
        sums, buckets = self.sums, self.buckets
        for observed in self.pending:
            for i, value in enumerate(observed):
                if value is not None:
                    sums[i] += value
                    buckets[i][bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.pending = []

    def flush(self) -> None:
        if not self.count:
            return
        self._bucket()
        self.counter.inc(self.count)
        for histogram, total, counts in zip(self.histograms, self.sums, self.buckets):
            if any(counts):
                _observed(histogram, total, counts)
        self.count = 0
        self.sums = [0.0] * len(self.histograms)
        self.buckets = [[0] * (len(LATENCY_BUCKETS) + 1) for _ in self.histograms]


def _observed(histogram, total: float, counts: list[int]) -> None:
    """What ``histogram.observe`` of each value would have added: their ``total`` to its sum and
    ``counts`` to its buckets. prometheus_client has no public way to add many observations at
    once; these are its private ``_sum`` and ``_buckets`` (per-bucket, not cumulative), which
    tests/test_observability.py checks against ``observe``."""
    histogram._sum.inc(total)
    for bucket, n in zip(histogram._buckets, counts):
        if n:
            bucket.inc(n)


def forget_dead_processes(stop: threading.Event, every_s: float = 2.0) -> None:
    """Until ``stop``: drop the live gauges (in flight) of gateway processes that died, so the sum
    is over the living. Their counters stay: a count never goes back."""
    while not stop.wait(every_s):
        for name in os.listdir(MULTIPROCESS_DIR):
            if name.startswith("gauge_live"):
                pid = int(name.rsplit("_", 1)[1].split(".")[0])
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    multiprocess.mark_process_dead(pid, MULTIPROCESS_DIR)


# ---------------------------------------------------------------- request ids and logs

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id(incoming: str | bytes | None) -> str:
    """The caller's id when it is a plain token (no log injection), else a new one."""
    if isinstance(incoming, bytes):
        incoming = incoming.decode("latin-1")
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


# Made-up ids: a random prefix per process and a counter (unique, and no syscall per request).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """One line for people: local time, level, and the message; an access line reads
    ``POST /v1/gradient 200 reverse 1.2 ms`` (the error code instead of the engine for a refusal,
    the request id last), other records' ``fields`` follow as key=value. ``color``: ANSI colours
    for levels and statuses (on a terminal)."""

    _COLORS = {"WARNING": "33", "ERROR": "31", "CRITICAL": "31;1", 2: "32", 3: "36", 4: "33", 5: "31"}

    def __init__(self, color: bool = False):
        super().__init__()
        self.color = color

    def _paint(self, text: str, key) -> str:
        code = self._COLORS.get(key)
        return f"\033[{code}m{text}\033[0m" if self.color and code else text

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = dict(getattr(record, "fields", {}))
        if record.name == access_log.name and "status" in fields:
            status = fields.pop("status")
            what = fields.get("error") or fields.get("engine") or ""
            target = fields.get("path") or fields.get("route") or ""
            method = fields.get("method") or fields.get("transport", "").upper()
            text = " ".join(str(p) for p in (method, target, self._paint(str(status), status // 100), what,
                                             f"{fields.get('ms', 0):.1f} ms", f"[{fields.get('request_id', '')}]")
                            if p != "")
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            text = record.getMessage() + (f"  {extra}" if extra else "")
        line = f"{stamp} {self._paint(record.levelname.ljust(7), record.levelname)} {text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str = "auto", level: str = "INFO", stream=None) -> None:
    """Log to ``stream`` (stderr) in ``fmt``: "json", "text", or "auto" (text on a terminal)."""
    stream = stream or sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if fmt not in ("json", "text", "auto"):
        raise ValueError(f"log format {fmt!r}: one of json, text, auto")
    handler = logging.StreamHandler(stream)
    text = fmt == "text" or (fmt == "auto" and tty)
    handler.setFormatter(TextFormatter(color=tty) if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def human_logs() -> bool:
    """Whether the root logger writes lines for people (``TextFormatter``)."""
    return any(isinstance(h.formatter, TextFormatter) for h in logging.getLogger().handlers)


def log_request(**fields) -> None:
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("request", extra={"fields": fields})


# ---------------------------------------------------------------- REST

class RequestTelemetry:
    """ASGI middleware: request id in and out, in-flight gauge, request counter and latency, one log line.

    The route stores what only it knows in the request state: ``engine`` and
    ``timings`` (compile, queue, compute seconds), and ``route`` when no framework
    route matched it (the derivative routes).
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self.busy = 0  # requests in flight: one event loop's, so a plain count (no lock per request)
        gauge = metrics.in_flight.labels("rest")
        if MULTIPROCESS_DIR is None:  # read at each scrape
            gauge.set_function(lambda: self.busy)
            gauge = None
        self.in_flight = gauge  # several processes: the gauge itself, which any of them may render

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value
                break
        rid = request_id(incoming)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status, error = 500, None

        async def send_with_id(message):
            nonlocal status, error
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            elif status >= 400 and error is None:  # a refusal's body is the error body: its code for the log
                found = _ERROR_CODE.search(message.get("body", b"")[:512])
                error = found.group(1).decode() if found else ""
            await send(message)

        if scope["path"] == "/metrics":  # the scrape itself is neither counted nor in flight
            return await self.app(scope, receive, send_with_id)
        gauge = self.in_flight
        self.busy += 1
        if gauge is not None:
            gauge.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.busy -= 1
            if gauge is not None:
                gauge.dec()
            seconds = time.perf_counter() - t0
            route = state.get("route") or (scope["route"].path if "route" in scope else "unmatched")
            engine = state.get("engine", "")
            compile_s, queue_s, compute_s = state.get("timings", (None, None, None))
            self.metrics.record("rest", route, engine, status, seconds, queue_s, compile_s, compute_s)
            if access_log.isEnabledFor(logging.INFO):  # the fields cost more than the check
                log_request(request_id=rid, transport="rest", method=scope["method"], path=scope["path"],
                            route=route, status=status, error=error or None, engine=engine or None,
                            ms=round(seconds * 1e3, 3),
                            compile_ms=_ms(compile_s), queue_ms=_ms(queue_s), compute_ms=_ms(compute_s),
                            client=(scope.get("client") or ("",))[0])


_ERROR_CODE = re.compile(rb'"code"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)
