"""Two tiers for one tape: numpy answers at once, XLA takes over what is hot.

A ``TieredTape`` is what ``CompiledFunction.tape`` hands out. Tier 1 is the
numpy tape of compile/codegen.py, ready in milliseconds; tier 2 is the same
graph compiled by XLA (compile/xla.py), which costs 0.1-2 s to compile and then
fuses elementwise chains and runs loops without Python. With ``xla_tier``:

* ``auto``: tier 1 answers; once a tape has run ``xla_after_runs`` times or
  spent ``xla_after_seconds`` of compute, one background thread compiles it
  (one tape at a time, so compiling never takes more than one core);
* ``always``: every tape is compiled before its first answer (for testing), unless
  its compile takes over ``xla_always_wait_s``: then tier 1 answers meanwhile. A
  request past its deadline (or a process shutting down) stops the compile it waits
  for: XLA compiles in a child process (compile/xla_process.py), which is killed;
* ``off``, or jax not installed: tier 1 only, as without this module.

Tier 2 answers only after it agreed with tier 1 at a real point: the compile
thread runs it at the point that made the tape hot (``auto``; if tier 2 declines
that point, the next run checks it at its own), or the first run does
(``always``), comparing every output within ``xla_rtol`` (relative to that
output's largest entry). One point does not prove a lowering right everywhere
(jax's own ``eigh`` read the mean of A and Aᵀ where numpy reads A's lower triangle:
equal at a symmetric first point, wrong at the next), so tier 2 is audited after
it took over: the compile thread reruns tier 1 at the points of its first
``AUDIT_FIRST`` answers and of every ``xla_audit_every``-th after, off the request
path, and drops tier 2 at the first disagreement (an answer already sent stands;
the damage is bounded, not undone). A
tape that disagrees stays on tier 1 for good and is logged and counted
(``derivd_tier2_tapes{result="rejected"}`` in /metrics); so is one using a
primitive without a tier-2 lowering (``result="unlowerable"``). In ``auto``, a
tape whose tier 2 runs no faster than tier 1 there (the fastest of up to
``SPEED_TRIES`` runs against tier 1's fastest on real requests) stays on tier 1 too
(``result="slower"``): calling an XLA executable from Python costs 5-10 µs, while a
small tape (a gradient of ten inputs) runs in a few µs on numpy. A hot tape whose
fastest tier-1 run took under ``xla_min_run_s`` is not even compiled (``result="small"``):
the compile would cost a core for a second to lose. An answer of
tier 2 holding a non-finite number, or refused by a lowering's check (an index
out of range, which jax would clamp), is recomputed on tier 1, which has the
numpy conventions and the errors (a singular matrix, that index) XLA lacks.

Each run notes its tier in the request's context (``deadlines.deadline``'s
``answered``): the service puts the highest in the response (``tier``) and the
gateway in ``Server-Timing``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from derivd import deadlines
from derivd.compile import xla, xla_process
from derivd.deadlines import check as check_deadline
from derivd.errors import DerivdError

log = logging.getLogger("derivd.tiers")

RESULTS = ("accepted", "rejected", "unlowerable", "slower", "small")
SPEED_TRIES = 3  # timed runs of a checked tier 2 against tier 1's fastest (the first may pay warm-up)
AUDIT_FIRST = 3  # tier 2's first answers after the check, each compared with tier 1 in the background
WAIT_SLICE_S = 0.05  # with ``always``, how often a request waiting for its compile looks at its deadline
# tapes of this process (and of its worker pools: ``add``) by what became of their tier 2
COUNTS = dict.fromkeys(RESULTS, 0)
_UNREPORTED = dict.fromkeys(RESULTS, 0)  # this process's counts not yet handed over by ``drain``
_COUNT_LOCK = threading.Lock()
_COMPILER: list = []  # the one background compile thread, made on first use


def enabled(settings) -> bool:
    """Whether tier 2 may run here: asked for (``xla_tier``, checked by the settings), and jax installed."""
    return settings.xla_tier != "off" and xla.available()


def preload(settings) -> None:
    """Import and configure jax in a server process before it serves, where tier 2 may run. Imported at a
    tape's first compile instead, jax's ~1 s import held the GIL beside the requests being served: a hot
    function's asks took 10-40x their time for a second or so (the scipy bench's logistic L-BFGS-B: 140-200
    ms a minimize for ~25 calls, 4.5 ms after; with the import at start, 40 ms at most for ~5 calls)."""
    if enabled(settings):
        xla.configure(settings)


def _answered(tier: int) -> None:
    current = deadlines.current()
    if current is not None:
        current.answered.add(tier)


def _count(result: str, n: int = 1) -> None:
    with _COUNT_LOCK:
        COUNTS[result] += n
        _UNREPORTED[result] += n


def drain() -> dict[str, int]:
    """The counts not handed over yet: a worker process puts them in each response (a tape promoted
    in the background is reported with the worker's next one), as its cache counts."""
    with _COUNT_LOCK:
        out = {r: n for r, n in _UNREPORTED.items() if n}
        _UNREPORTED.update(dict.fromkeys(RESULTS, 0))
    return out


def add(counts: dict[str, int]) -> None:
    """A worker's drained counts, added to this (the gateway's) process's, so that its /metrics
    counts the tapes of its pools too; unknown results are ignored (a newer worker)."""
    with _COUNT_LOCK:
        for result, n in counts.items():
            if result in COUNTS and n > 0:
                COUNTS[result] += n


def _compiler() -> ThreadPoolExecutor:
    with _COUNT_LOCK:
        if not _COMPILER:
            _COMPILER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="derivd-xla"))
        return _COMPILER[0]


def settle() -> None:
    """Wait until the compile thread has done what was handed to it: compiles, checks and the audits of tier
    2's first answers, which run tier 1 (for benchmarks: on one core an audit beside the timed runs doubled
    an LSTM's)."""
    _compiler().submit(lambda: None).result()


def agree(got, want, rtol: float) -> bool:
    """Every output of tier 2 within ``rtol`` of tier 1's, relative to that output's largest entry;
    non-finite entries must match exactly."""
    for a, b in zip(got, want):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return False
        finite = np.isfinite(b)
        if not np.array_equal(np.isfinite(a), finite) or not np.array_equal(a[~finite], b[~finite]):
            return False
        scale = float(np.max(np.abs(b[finite]), initial=0.0))
        if not np.allclose(a[finite], b[finite], rtol=rtol, atol=rtol * max(scale, 1e-300)):
            return False
    return True


SETTLED = frozenset(("rejected", "unlowerable", "slower", "small"))  # states a tape never leaves, all on tier 1


class TieredTape:
    """A tape with its numpy tier and, once compiled and checked, its XLA tier (same interface as
    codegen's ``Tape``: ``run``, ``source``, ``n_nodes``, ``arg_names``)."""

    def __init__(self, tape, graph, inputs: list, outputs: list, settings):
        self.tier1 = tape
        self.source, self.n_nodes = tape.source, tape.n_nodes
        self.settings = settings
        self._graph, self._inputs, self._outputs = graph, list(inputs), list(outputs)
        self.tier2 = None  # an XlaTape that agreed with tier 1
        # cold -> compiling (then checked at a run) -> tier 2 | rejected | unlowerable | slower; cold -> small
        self.state = "cold"
        self.runs, self.seconds, self.fastest = 0, 0.0, float("inf")  # tier 1's, while cold
        self._candidate = None  # compiled, not yet checked: the next run checks it
        self.answers2 = 0  # tier 2's answers since it took over (counted without a lock: audits are samples)
        self._lock = threading.Lock()
        if settings.xla_tier == "always":
            self.state = "compiling"
            self._compile_in_time()

    def _compile_in_time(self) -> None:
        """``always``: compile on the compile thread and wait at most ``xla_always_wait_s``. XLA's CPU
        compile time grows faster than a long straight-line program (an unrolled second-order
        program of ~1000 nodes: 8-25 s, README): past the wait tier 1 answers, and the compile, left
        running, becomes the candidate the next run checks. Past the request's deadline (or once the
        process is stopping) the compile is stopped (its child process killed) and the request fails
        as it would have (504, 503): the tape, not kept, is compiled again by the next request."""
        ticket = xla_process.Ticket()
        future = _compiler().submit(self._compile, ticket)
        end = time.monotonic() + self.settings.xla_always_wait_s
        while True:
            try:
                self._candidate = future.result(timeout=min(WAIT_SLICE_S, max(end - time.monotonic(), 0.0)))
                return
            except TimeoutError:
                pass
            try:
                check_deadline()
            except DerivdError:
                ticket.cancel()
                future.cancel()
                raise
            if time.monotonic() >= end:
                log.info("tier-2 compile past xla_always_wait_s=%s; tier 1 answers meanwhile",
                         self.settings.xla_always_wait_s)
                future.add_done_callback(self._compiled)
                return

    def _compiled(self, future) -> None:
        candidate = future.result()
        if candidate is not None:
            with self._lock:
                self._candidate = candidate

    def _compile(self, ticket=None):
        """The graph compiled by XLA, or None: counted and logged if tier 2 cannot run it, not counted
        if the compile was stopped (``ticket`` cancelled, or the process stopping)."""
        graph, inputs, outputs = self._graph, self._inputs, self._outputs
        self._graph = self._inputs = self._outputs = None
        try:
            return xla.compile_graph(graph, inputs, outputs, self.settings, ticket)
        except xla_process.Cancelled as e:
            log.info("tier-2 compile stopped: %s", e)
            return None
        except Exception as e:  # tier 2 never fails a request: the tape stays on tier 1
            self.state = "unlowerable"
            _count("unlowerable")
            if isinstance(e, xla.NotLowerable):
                log.info("tape stays on tier 1: %s", e)
            else:
                log.exception("tier-2 compile failed; the tape stays on tier 1")
            return None

    def run(self, *args):
        tier2 = self.tier2
        if tier2 is not None:  # first: a warm call of a small tape is a few microseconds
            check_deadline()  # an XLA executable runs to its end: a request already late starts nothing
            out = self._run2(tier2, args)  # None where tier 1 must answer
            if out is not None:
                _answered(2)
                self.answers2 = n = self.answers2 + 1
                every = self.settings.xla_audit_every
                if n <= AUDIT_FIRST or (every and n % every == 0):  # the point and answer, copied
                    _compiler().submit(self._audit, tier2, [np.array(a) for a in args], [np.array(o) for o in out])
                return out
        elif self.state in SETTLED:  # tier 1 for good: nothing to time or check
            out = self.tier1.run(*args)
            _answered(1)
            return out
        t0 = time.perf_counter()
        out = self.tier1.run(*args)
        seconds = time.perf_counter() - t0
        _answered(1)
        with self._lock:  # one run checks a candidate
            candidate, self._candidate = self._candidate, None
        if candidate is not None:
            got = self._check(candidate, args, out)
            if got is not None:
                _answered(2)
                return got
            return out
        if self.state == "cold":
            with self._lock:
                self.runs += 1
                self.seconds += seconds
                self.fastest = min(self.fastest, seconds)
                hot = (self.state == "cold" and (self.runs >= self.settings.xla_after_runs
                                                 or self.seconds >= self.settings.xla_after_seconds))
                if hot and self.fastest < self.settings.xla_min_run_s:  # XLA's call alone costs about that
                    self.state, hot = "small", False
                    _count("small")
                elif hot:
                    self.state = "compiling"
            if hot:  # the point and tier 1's answer there, copied: the caller's arrays may change
                _compiler().submit(self._promote, [np.array(a) for a in args], [np.array(o) for o in out])
        return out

    def _promote(self, args, want) -> None:
        """Background: compile, then check at the point that made the tape hot, off the request path
        (an executable XLA made slow stalls this thread, never a request); swap in if it agrees."""
        candidate = self._compile()
        if candidate is not None:
            self._check(candidate, args, want)  # declined that point: the next run checks it at its own

    def _check(self, candidate, args, want):
        """Tier 2's outputs at ``args`` if they agree with tier 1's ``want`` (then it answers from
        now on), else None: discarded for good if it disagreed, kept for the next point if it
        declined this one (a non-finite number, an index out of range: tier 1's answer stands)."""
        t0 = time.perf_counter()
        got = self._run2(candidate, args)
        seconds = time.perf_counter() - t0
        if got is None:
            if self.state != "rejected":
                self._candidate = candidate
            return None
        if not agree(got, want, self.settings.xla_rtol):
            self._reject("tier 2 disagreed with tier 1 at a point")
            return None
        if self.settings.xla_tier == "auto" and not self._faster(candidate, args, seconds):
            if self.state == "rejected":  # it failed on a timed run
                return None
            self.state = "slower"
            _count("slower")
            log.info("tier 2 ran no faster than tier 1's %.0f us; the tape stays on tier 1", self.fastest * 1e6)
            return None
        self.tier2, self.state = candidate, "tier 2"
        _count("accepted")
        return got

    def _audit(self, tier2, args, got) -> None:
        """Background: tier 1 at a point where ``tier2`` answered ``got``; tier 2 dropped for good if they
        disagree, or if tier 1 refuses the point (its error would have been the answer)."""
        if self.tier2 is not tier2:
            return
        try:
            with np.errstate(all="ignore"):
                want = self.tier1.run(*args)
        except Exception:  # tier 1 refuses the point (a singular matrix): its error was the answer
            want = None
        if want is not None and agree(got, want, self.settings.xla_rtol):
            return
        with self._lock:
            if self.tier2 is tier2:
                self._reject(f"tier 2 disagreed with tier 1 at a later point (audit {self.answers2})")

    def _reject(self, why: str) -> None:
        """Tier 2 dropped for good, counted and logged: the tape stays on tier 1."""
        self.tier2, self.state = None, "rejected"
        _count("rejected")
        log.warning("%s; the tape stays on tier 1", why)

    def _faster(self, candidate, args, seconds: float) -> bool:
        """Whether ``candidate`` (which took ``seconds`` at ``args``) beats tier 1's fastest run: timed
        again, up to ``SPEED_TRIES`` runs in all, until one does."""
        for _ in range(SPEED_TRIES - 1):
            if seconds < self.fastest:
                return True
            t0 = time.perf_counter()
            if self._run2(candidate, args) is None:  # failed (now rejected), or declined the point
                return False
            seconds = min(seconds, time.perf_counter() - t0)
        return seconds < self.fastest

    def _run2(self, tape, args):
        """Tier 2's outputs, or None: declined at this point, or failed (logged; tier 2 dropped for good)."""
        try:
            return tape.run(*args)
        except Exception:
            log.exception("tier 2 failed to run; the tape stays on tier 1")
            if self.state != "rejected":
                self.tier2, self.state = None, "rejected"
                _count("rejected")
            return None
