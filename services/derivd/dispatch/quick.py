"""Which requests run on the thread that received them, instead of being handed to a compute thread.

Handing a request to a thread and back costs 0.3-1 ms on a busy 2-core machine,
more than a compiled small derivative costs. A request whose function, shapes
and endpoint last ran in under ``limit_s`` of CPU (compile included; the
dispatcher measures the thread's CPU time, which a busy machine does not
inflate as it does wall time), in this process and without a black box, runs
inline; anything slower or new goes to the
compute threads, so the receiving thread (REST: the event loop) is never held
for long. The table holds at most ``size`` kinds, each as a hash (bytes, not
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

    def key(self, row, req) -> tuple | None:
        """What identifies a kind of request (None: never inline: a black box, a worker's request)."""
        if not self.router.runs_in_process(row, req.mode):
            return None
        return self.kind(row, req)

    def is_quick(self, key: tuple | None) -> bool:
        return key is not None and self.seconds.get(hash(key), INF) < self.limit_s

    def record(self, key: tuple | None, seconds: float) -> None:
        if key is None:
            return
        if len(self.seconds) >= self.size:
            self.seconds.clear()
        self.seconds[hash(key)] = seconds
