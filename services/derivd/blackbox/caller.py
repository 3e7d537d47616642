"""Calling a black box at many points at once, from synchronous code.

The finite-difference engine runs on worker threads and wants a plain batched
callable ``f(X) -> Y``; the points of one stencil are independent, so their
HTTP calls should all be in flight together. :class:`BlackBoxCaller` bridges
the two: ``evaluate`` submits the whole batch as one coroutine to the
process's single black-box event loop (a daemon thread) and blocks for it.
That loop is long-lived so that each black box keeps a pool of keep-alive
httpx connections that serve request after request, and so that
``max_concurrency`` bounds a black box across every request of the process,
not just within one.
"""

import asyncio
import concurrent.futures
import json
import math
import os
import random
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass

import httpx
import numpy as np

from .. import clock
from ..config import Settings, get_settings
from ..errors import (
    DeadlineExceeded, DerivdError, ShapeError, UpstreamError, UpstreamTimeout, ValidationFailed,
)
from .spec import BlackBoxSpec
from .ssrf import Reply, ResponseTooLarge, Target, check_url, post_json

# Black boxes whose connections are kept at once, so that registrations that
# come and go cannot pile up sockets.
_MAX_UPSTREAMS = 256
# How long past the deadline the waiting thread gives the loop to report the
# DeadlineExceeded it raises itself, before giving up on it.
_DEADLINE_GRACE_S = 0.25
# Bytes one number of a well-formed batch answer may take as JSON, for sizing
# batches to fit the response cap.
_JSON_BYTES_PER_NUMBER = 25


class _Upstream:
    """A black box's keep-alive connections, at most ``max_concurrency``.

    Each connection is its own single-connection transport, handed out LIFO
    so the warmest is reused first; holding one is holding a concurrency
    slot. (One ``AsyncClient`` pooling N connections would be the obvious
    design, but httpcore rescans every pooled connection on every request
    event: at N=20 on a 2-vCPU machine that measured ~2.7 ms of CPU per call
    against ~1.2 ms here, and that CPU sits on the critical path of every
    wave of a stencil.)
    """

    def __init__(self, max_concurrency: int, ssl_context: ssl.SSLContext):
        self.slots = asyncio.Semaphore(max_concurrency)
        self._ssl_context = ssl_context
        self._idle: list[httpx.AsyncHTTPTransport] = []

    def take(self) -> httpx.AsyncHTTPTransport:
        """A connection for a caller holding a slot: an idle one, or a new one."""
        if self._idle:
            return self._idle.pop()
        return httpx.AsyncHTTPTransport(
            verify=self._ssl_context, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
        )

    def give_back(self, transport: httpx.AsyncHTTPTransport) -> None:
        self._idle.append(transport)

    async def aclose(self) -> None:
        for transport in self._idle:
            await transport.aclose()


class _Runtime:
    """The process's one black-box event loop, on its own daemon thread."""

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        # One TLS context for every connection: building one loads the CA
        # bundle, tens of milliseconds each.
        self._ssl_context = httpx.create_ssl_context()
        self._upstreams: OrderedDict[tuple[str, int], _Upstream] = OrderedDict()
        threading.Thread(target=self.loop.run_forever, name="derivd-blackbox-loop", daemon=True).start()

    def upstream(self, spec: BlackBoxSpec) -> _Upstream:
        """The connections of a black box; call on the loop thread only.

        Keyed by name and concurrency so a re-registration with another bound
        gets a pool of the right size; least recently used ones are closed.
        """
        key = (spec.name, spec.max_concurrency)
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = self._upstreams[key] = _Upstream(spec.max_concurrency, self._ssl_context)
            while len(self._upstreams) > _MAX_UPSTREAMS:
                _, evicted = self._upstreams.popitem(last=False)
                self.loop.create_task(evicted.aclose())
        self._upstreams.move_to_end(key)
        return upstream


@dataclass(frozen=True)
class _Run:
    """What every HTTP call of one ``evaluate`` shares."""

    upstream: _Upstream
    target: Target
    deadline: float | None


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def _get_runtime() -> _Runtime:
    """The loop of this process; a forked worker starts its own, since
    threads do not survive a fork."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = _Runtime()
        return _runtime


class BlackBoxCaller:
    """Evaluates one registered black box as a batched function ``X -> Y``.

    Identical points are evaluated once; all distinct points are in flight at
    once up to ``max_concurrency`` (or sent as ``{"xs": ...}`` batches when
    the spec says ``batch``); 5xx answers, timeouts and failed connections are
    retried with jittered exponential backoff; answers are validated. Every
    failure is a :class:`DerivdError` naming the black box.

    ``evaluations`` counts the distinct points asked of the black box, for
    reporting what a request cost.
    """

    def __init__(self, spec: BlackBoxSpec, settings: Settings | None = None, max_batch_points: int = 1000):
        self.spec = spec
        self.evaluations = 0
        self._settings = settings or get_settings()
        self._max_batch_points = max_batch_points
        self._lock = threading.Lock()

    def evaluate(self, X: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """``Y[i] = f(X[i])`` for ``X`` of shape ``(p, input_size)``.

        ``deadline`` is an absolute instant on ``clock.now()``; past it the
        call raises :class:`DeadlineExceeded` and abandons calls in flight.
        The URL is re-checked (and re-resolved) on every call, so a DNS answer
        that changed since registration cannot redirect us somewhere refused.
        """
        spec = self.spec
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != spec.input_size:
            raise ShapeError(
                f"black box {spec.name!r} takes points of length {spec.input_size}, "
                f"got an array of shape {X.shape}",
                blackbox=spec.name, expected=["p", spec.input_size], got=list(X.shape),
            )
        if not np.isfinite(X).all():
            raise ValidationFailed(
                f"black box {spec.name!r} cannot be called at a non-finite point", blackbox=spec.name
            )
        if len(X) == 0:
            return np.empty((0, spec.output_size))
        unique, inverse = np.unique(X, axis=0, return_inverse=True)
        target = check_url(spec.url, self._settings)
        with self._lock:
            self.evaluations += len(unique)
        runtime = _get_runtime()
        future = asyncio.run_coroutine_threadsafe(
            self._evaluate(runtime, target, unique, deadline), runtime.loop
        )
        wait = None if deadline is None else _left(deadline) + _DEADLINE_GRACE_S
        try:
            Y = future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._deadline_exceeded(None) from None
        return Y[inverse.reshape(-1)]

    async def _evaluate(
        self, runtime: _Runtime, target: Target, U: np.ndarray, deadline: float | None
    ) -> np.ndarray:
        run = _Run(runtime.upstream(self.spec), target, deadline)
        if not self.spec.batch:
            return np.stack(await _all(self._point(run, u) for u in U))
        size = self._batch_size()
        chunks = (U[i:i + size] for i in range(0, len(U), size))
        return np.concatenate(await _all(self._chunk(run, c) for c in chunks))

    def _batch_size(self) -> int:
        """Points per batch: at most ``max_batch_points``, and few enough that
        a well-formed answer fits under the response cap."""
        per_point = _JSON_BYTES_PER_NUMBER * self.spec.output_size + 4
        return max(1, min(self._max_batch_points, self._settings.blackbox_max_response_bytes // per_point))

    async def _point(self, run: _Run, x: np.ndarray) -> np.ndarray:
        body = await self._post(run, json.dumps({"x": x.tolist()}).encode())
        return self._vector(self._field(body, "y"), "y")

    async def _chunk(self, run: _Run, xs: np.ndarray) -> np.ndarray:
        body = await self._post(run, json.dumps({"xs": xs.tolist()}).encode())
        ys = self._field(body, "ys")
        if not isinstance(ys, list):
            raise self._bad("returned ys that is not a list")
        if len(ys) != len(xs):
            raise self._bad(f"returned ys of length {len(ys)} for {len(xs)} points")
        return np.stack([self._vector(y, f"ys[{k}]") for k, y in enumerate(ys)])

    async def _post(self, run: _Run, payload: bytes) -> bytes:
        """One logical call with its retries; returns the body of a 2xx answer.

        4xx, redirects and oversized bodies are not retried: the same request
        would get the same answer.
        """
        attempts = self._settings.blackbox_retries + 1
        failure, timed_out = "", False
        for attempt in range(attempts):
            pause = self._backoff(attempt)
            left = _left(run.deadline)
            if left is not None and (left == 0 or pause >= left):
                raise self._deadline_exceeded(failure)
            if pause:
                await asyncio.sleep(pause)
            try:
                reply = await self._attempt(run, payload)
            except TimeoutError:
                failure, timed_out = f"did not answer within timeout_s={self.spec.timeout_s:g}", True
                continue
            except httpx.TransportError as exc:
                failure, timed_out = f"could not be reached ({type(exc).__name__})", False
                continue
            except ResponseTooLarge as exc:
                raise self._bad(
                    f"sent a response larger than the {exc.limit}-byte cap",
                    limit=exc.limit, size=exc.declared,
                ) from None
            if 200 <= reply.status < 300:
                return reply.body
            if reply.status >= 500:
                failure, timed_out = f"answered HTTP {reply.status}", False
                continue
            if 300 <= reply.status < 400:
                raise self._bad(
                    f"answered with a redirect (HTTP {reply.status}), which is not followed",
                    upstream_status=reply.status, location=reply.location,
                )
            raise self._bad(f"answered HTTP {reply.status}", upstream_status=reply.status)
        message = f"black box {self.spec.name!r} {failure} after {attempts} attempts"
        if timed_out:
            raise UpstreamTimeout(
                message, blackbox=self.spec.name, attempts=attempts, timeout_s=self.spec.timeout_s
            )
        raise UpstreamError(message, blackbox=self.spec.name, attempts=attempts)

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (0 for the first): exponential,
        with +-50% jitter so points that failed together (an overloaded black
        box) do not all come back at the same instant."""
        if attempt == 0:
            return 0.0
        return self._settings.blackbox_backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)

    async def _attempt(self, run: _Run, payload: bytes) -> Reply:
        """One HTTP call. Waiting for a slot is bounded by the deadline only
        (it is our queue, not the black box's slowness); the call itself by
        ``timeout_s`` or what is left of the deadline, whichever is less."""
        upstream = run.upstream
        try:
            async with asyncio.timeout(_left(run.deadline)):
                await upstream.slots.acquire()
        except TimeoutError:
            raise self._deadline_exceeded(None) from None
        transport = upstream.take()
        try:
            left = _left(run.deadline)
            deadline_binds = left is not None and left <= self.spec.timeout_s
            try:
                async with asyncio.timeout(left if deadline_binds else self.spec.timeout_s):
                    return await post_json(
                        transport, run.target, payload, self.spec.headers,
                        self._settings.blackbox_max_response_bytes,
                    )
            except TimeoutError:
                if deadline_binds:
                    raise self._deadline_exceeded(None) from None
                raise
        finally:
            upstream.give_back(transport)
            upstream.slots.release()

    def _field(self, body: bytes, key: str):
        try:
            data = json.loads(body)
        except ValueError:  # also covers bodies that are not UTF-8
            raise self._bad("returned a body that is not JSON") from None
        if not isinstance(data, dict) or key not in data:
            raise self._bad(f"returned JSON without a {key!r} field")
        return data[key]

    def _vector(self, value, what: str) -> np.ndarray:
        n = self.spec.output_size
        if n == 1 and _is_number(value):
            value = [value]  # a scalar-output black box may answer {"y": 1.5}
        if not isinstance(value, list):
            raise self._bad(f"returned {what} that is not a list of numbers")
        if len(value) != n:
            raise self._bad(f"returned {what} of length {len(value)}, expected {n}")
        y = np.empty(n)
        for i, v in enumerate(value):
            if not _is_number(v):
                raise self._bad(f"returned {what}[{i}] of type {type(v).__name__}, expected a number")
            try:
                y[i] = v
            except OverflowError:  # an integer literal beyond float range
                y[i] = math.inf
            if not math.isfinite(y[i]):
                raise self._bad(f"returned a non-finite number ({y[i]}) in {what}[{i}]")
        return y

    def _bad(self, what: str, **detail) -> UpstreamError:
        return UpstreamError(f"black box {self.spec.name!r} {what}", blackbox=self.spec.name, **detail)

    def _deadline_exceeded(self, last_failure: str | None) -> DeadlineExceeded:
        """The deadline passed; ``last_failure`` says what a pending retry was for."""
        return DeadlineExceeded(
            f"request deadline passed while calling black box {self.spec.name!r}",
            blackbox=self.spec.name, last_failure=last_failure or None,
        )


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never negative) by ``clock.now()``, or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - clock.now())


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


async def _all(coroutines) -> list:
    """Run all at once and return their results in order. The first failure
    cancels the rest and is raised as itself, not inside an ExceptionGroup:
    one bad answer already decides the request."""
    tasks = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as failures:
        leaves = list(_leaves(failures))
        raise next((e for e in leaves if isinstance(e, DerivdError)), leaves[0]) from None
    return [t.result() for t in tasks]


def _leaves(group: BaseExceptionGroup):
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
