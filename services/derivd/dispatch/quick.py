"""Which requests run on the thread that received them, instead of being handed to a compute thread.

Handing a request to a thread and back costs 0.3-1 ms on a busy 2-core machine,
more than a compiled small derivative costs. A request whose function, shapes
and endpoint last ran in under ``limit_s`` of CPU (compile included; the
dispatcher measures the thread's CPU time, which a busy machine does not
inflate as it does wall time), in this process and without a black box, runs
inline; anything slower or new goes to the
compute threads, so the receiving thread (REST: the event loop) is never held
for long. A quick kind's inline runs are timed by the wall clock (no system
call) instead: wall time bounds a thread's CPU time from above, so a run under
the limit keeps its kind quick for certain, and only the run after one that
was not (slow, or merely preempted) has its CPU time read, two system calls
that cost a busy virtual machine a few microseconds. The table holds at most ``size`` kinds, each as a hash (bytes, not
program text).
"""

from __future__ import annotations

INF = float("inf")


class QuickRequests:
    """The last compute time of each kind of request, and whether that kind may run inline."""

    def __init__(self, router, kind, limit_s: float, size: int = 4096):
        """``kind(row, req)``: ``core.Service.kind``, the same key its plans are kept under."""
        self.router, self.kind, self.limit_s, self.size = router, kind, limit_s, size
        # Each kind by its key's hash, never the program text (up to max_source_bytes a kind): a
        # collision only makes one kind of request run inline or not, never changes an answer.
        self.seconds: dict[int, float] = {}
        self.doubts: set[int] = set()  # quick kinds whose last inline run took the limit or more, by the wall clock

    def key(self, row, req) -> tuple | None:
        """What identifies a kind of request (None: never inline: a black box, a worker's request)."""
        if not self.router.runs_in_process(row, req.mode):
            return None
        return self.kind(row, req)

    def is_quick(self, key: tuple | None) -> bool:
        return key is not None and self.seconds.get(hash(key), INF) < self.limit_s

    def record(self, key: tuple | None, seconds: float) -> None:
        """A run of kind ``key`` took ``seconds`` of CPU."""
        if key is None:
            return
        if len(self.seconds) >= self.size:
            self.seconds.clear()
            self.doubts.clear()
        h = hash(key)
        self.seconds[h] = seconds
        self.doubts.discard(h)

    def doubted(self, key: tuple) -> bool:
        """Whether the next run of quick kind ``key`` must have its CPU time measured (and ``record``ed)."""
        return bool(self.doubts) and hash(key) in self.doubts

    def timed(self, key: tuple, wall_s: float) -> None:
        """An inline run of quick kind ``key`` took ``wall_s`` by the wall clock: over the limit, the
        kind stays quick until its next run's CPU time says otherwise."""
        if wall_s >= self.limit_s:
            self.doubts.add(hash(key))
