"""``Dispatcher.submit(endpoint, request) -> (answer, timings)``: the one way a request is run.

Both skins and the HVP stream come through here, so the policy exists once:

* the deadline: the request's budget (``request_timeout_s``, or less when the
  caller's own deadline is nearer) becomes ``req.deadline``, which the engines
  and a worker process honour; a caller gets 504 when it passes;
* where it runs: quick requests (``quick.QuickRequests``: seen to take under
  ``inline_compute_s`` in this process) on the receiving thread, anything else
  on the compute threads, so that the receiving thread can give up at the
  deadline; the time spent waiting for a compute thread is ``timings.queue``;
* which pool computes it (``pools.Router``): a stored id is resolved here
  (ids live with the gateway), a program goes to its engine family's pool, a
  black box stays in process;
* the record: each request's CPU time on the thread that ran it (compile
  included) decides whether its kind runs inline next time; CPU, not wall time,
  so that a request preempted on a busy machine does not send its kind to the
  compute threads, whose hand-off costs more than the request. An inline run is
  timed by the wall clock, which bounds its CPU time, and only doubted ones by
  CPU (``quick``).

REST runs on an event loop and awaits (``submit_async``); gRPC handlers block
(``submit``). Both go through ``_admit`` and ``_finish`` and one executor; only
the wait differs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from derivd.core import Service, Timings, endpoint
from derivd.dispatch.pools import Router
from derivd.dispatch.quick import QuickRequests
from derivd.errors import DeadlineExceeded

# A stream's direction costs one run of the HVP tape, about what its start measured: when that is this
# short, directions run on the receiving thread (no hand-off), the deadline checked before each.
INLINE_DIRECTION_S = 0.005


class Dispatcher:
    """The pools, the compute threads and the inline policy in front of one ``core.Service``."""

    def __init__(self, service: Service):
        self.service = service
        self.settings = service.settings
        self.router = Router(self.settings, service.compute, service.cache.stats)
        self.quick = QuickRequests(self.router, service.kind, self.settings.inline_compute_s)
        self.executor = concurrent.futures.ThreadPoolExecutor(self.settings.compute_threads,
                                                              thread_name_prefix="derivd-compute")

    def budget(self, remaining: float | None = None) -> float:
        """Seconds a request may take: ``request_timeout_s``, or the caller's ``remaining`` when nearer."""
        limit = self.settings.request_timeout_s
        return limit if remaining is None else min(limit, remaining)

    # ------------------------------------------------------------ unary requests

    def submit(self, name: str, req, remaining: float | None = None, compiled: tuple | None = None
               ) -> tuple[dict, Timings]:
        """Endpoint ``name`` of ``req``, blocking this thread until it is answered or its deadline passes.
        ``compiled`` (``Service.compiled``, kept by a session): used where ``req`` runs in this process."""
        row, key, budget = self._admit(name, req, remaining)
        if self.quick.is_quick(key):
            return self._inline(row, req, key, compiled)
        ran, queue_s = self.call(budget, self._run, row, req, key, compiled)
        return self._finish(key, ran, queue_s)

    async def submit_async(self, name: str, req, remaining: float | None = None) -> tuple[dict, Timings]:
        """``submit`` for an event loop: a quick request runs on the loop, any other is awaited."""
        row, key, budget = self._admit(name, req, remaining)
        if self.quick.is_quick(key):
            return self._inline(row, req, key)
        queued = time.perf_counter()
        future = self.executor.submit(_timed, self._run, row, req, key)
        try:
            started, ran = await asyncio.wait_for(asyncio.wrap_future(future), timeout=budget)
        except asyncio.TimeoutError:
            raise _late(budget) from None
        return self._finish(key, ran, started - queued)

    def _admit(self, name: str, req, remaining: float | None):
        row = endpoint(name)
        budget = self.budget(remaining)
        req.deadline = time.monotonic() + budget  # carried to the engines, and to a worker
        return row, self.quick.key(row, req), budget

    def _route(self, row, req) -> tuple[dict, Timings]:
        function = req.function
        if isinstance(function, dict) and len(function) == 1:
            if "dsl" in function:
                return self.router.run(row, req)
            if "id" in function:
                return self.router.run(row, self.service.resolve(req))
        return self.router.in_process.run(row.name, req, "")  # a black box, or what the core refuses

    def _run(self, row, req, key: tuple | None = None, compiled: tuple | None = None):
        """``_route``'s answer and the CPU seconds this thread spent on it. A request of a kind
        (``key``: in process, a program) goes straight to the core with its key, under which the core
        keeps its plan; ``compiled`` is used when given and in process."""
        cpu = time.thread_time()
        if key is not None or (compiled is not None and self.router.runs_in_process(row, req.mode)):
            result = self.router.in_process.compute(row.name, req, compiled, key)
        else:
            result = self._route(row, req)
        return result, time.thread_time() - cpu

    def _inline(self, row, req, key: tuple, compiled: tuple | None = None) -> tuple[dict, Timings]:
        """A request of a quick kind, on this thread: timed by the wall clock, by CPU when doubted."""
        if self.quick.doubted(key):
            return self._finish(key, self._run(row, req, key, compiled), 0.0)
        t0 = time.perf_counter()
        answer, timings = self.router.in_process.compute(row.name, req, compiled, key)
        self.quick.timed(key, time.perf_counter() - t0)
        return answer, timings

    def _finish(self, key, ran: tuple[tuple[dict, Timings], float], queue_s: float) -> tuple[dict, Timings]:
        (answer, timings), cpu_s = ran
        self.quick.record(key, cpu_s)
        timings.queue = queue_s
        return answer, timings

    # ------------------------------------------------------------ any work, within a budget

    def call(self, budget: float, fn, *args):
        """``fn(*args)`` on a compute thread, within ``budget`` seconds; returns (result, queue seconds)."""
        queued = time.perf_counter()
        future = self.executor.submit(_timed, fn, *args)
        try:
            started, result = future.result(timeout=max(budget, 0.0))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise _late(budget) from None
        return result, started - queued

    # ------------------------------------------------------------ HVP streams

    def hvp_stream(self, req, remaining: float | None = None):
        """A stream's start (``Service.hvp_stream``, always in process): (stream, queue seconds)."""
        budget = self.budget(remaining)
        req.deadline = time.monotonic() + budget
        return self.call(budget, self.service.hvp_stream, req)

    def hvp(self, stream, v: dict, where: str, remaining: float | None = None) -> dict:
        """One direction of ``stream``: on this thread when its start was quick, else a compute thread."""
        budget = self.budget(remaining)
        if stream.compute_seconds < INLINE_DIRECTION_S and budget > 0:
            return stream.hvp(v, where)
        return self.call(budget, stream.hvp, v, where)[0]

    # ------------------------------------------------------------ the pools

    def ready(self) -> tuple[bool, dict]:
        """Whether every pool requests are routed to is reachable (``/readyz``, gRPC health)."""
        return self.router.ready()

    def close(self) -> None:
        self.router.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _timed(fn, *args):
    return time.perf_counter(), fn(*args)


def _late(budget: float) -> DeadlineExceeded:
    seconds = round(budget, 3)
    return DeadlineExceeded(f"the request ran past its deadline of {seconds:g} s", deadline_s=seconds)
