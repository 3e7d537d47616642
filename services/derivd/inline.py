"""Which requests a skin runs on the thread that received them, instead of handing them to a pool.

Shared by REST (the event loop) and gRPC (the handler thread): a hand-off to a
thread and back costs more than a compiled small derivative does.
"""

from __future__ import annotations

import numpy as np


class QuickRequests:
    """Which requests may run inline instead of on a compute thread.

    Handing a request to a thread and back costs 0.3-1 ms on a busy 2-core machine,
    more than a compiled small derivative costs. A request whose function, shapes and
    endpoint last ran in under ``limit_s`` (compile included), in this process and
    without a black box, runs inline; anything slower or new goes to the thread pool,
    so the receiving thread (REST: the event loop) is never held for long.
    """

    def __init__(self, service, limit_s: float, size: int = 4096):
        self.service, self.limit_s, self.size = service, limit_s, size
        self.seconds: dict[tuple, float] = {}

    def key(self, endpoint: str, req) -> tuple | None:
        function = req.function
        if not isinstance(function, dict) or len(function) != 1 or "blackbox" in function:
            return None
        if not self.service.pools.runs_in_process(endpoint, req.mode):
            return None
        (kind, value), = function.items()
        shapes = tuple((k, np.shape(v)) for k, v in req.at.items())
        consts = tuple((k, np.shape(v)) for k, v in req.constants.items())
        return endpoint, kind, str(value), shapes, consts, req.mode, req.verify, req.sparse

    def is_quick(self, key: tuple) -> bool:
        return self.seconds.get(key, float("inf")) < self.limit_s

    def record(self, key: tuple | None, seconds: float) -> None:
        if key is None:
            return
        if len(self.seconds) >= self.size:
            self.seconds.clear()
        self.seconds[key] = seconds
