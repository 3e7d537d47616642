"""The deadline of the request this thread is computing, readable from every layer.

``Service.compute`` (in the gateway and in a worker) sets it around a request
(``deadline``); ``check`` raises ``DeadlineExceeded`` once it is past. It is
read where work repeats, so that a request whose caller already had its 504
stops burning a core within a step: between engine passes (Jacobian columns,
Taylor directions, finite differences), between a loop node's iterations
(``ir.loop.run_loop``) and every few costly lines of a compiled tape
(``compile.codegen``). A single numpy call cannot be interrupted; the cost
estimate (``ir.cost``) refuses up front a program whose steps could not finish.

A process that is shutting down (``stop_all``, on SIGTERM) makes every check
fail at once, so that its computations end within a step instead of at their
deadlines.

Time is ``clock.now()`` (``time.monotonic``'s scale, on which the skins stamp
deadlines), read through the module so that tests can make time pass.

The same context carries what else every layer may note about the request: the
compile tiers whose tapes answered it (``answered``, engines/tiers.py), which the
service puts in the response. One context variable, set once a request.
"""

from __future__ import annotations

import contextvars
import threading

from derivd import clock
from derivd.errors import DeadlineExceeded, DerivdError

STOPPING = threading.Event()  # set once: the process is shutting down


class deadline:
    """``with deadline(at, budget_s) as request``: work in the block stops at its next check once ``at``
    (on ``clock.now()``'s scale; None: never) is past; ``request.answered`` is the set of compile tiers
    (1, 2) whose tapes ran in the block. A class, not a generator: it is around every request."""

    __slots__ = ("at", "budget_s", "answered", "_token")

    def __init__(self, at: float | None, budget_s: float):
        self.at = INF if at is None else at
        self.budget_s = budget_s
        self.answered: set[int] = set()

    def __enter__(self) -> "deadline":
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT.reset(self._token)


INF = float("inf")
_CURRENT: contextvars.ContextVar[deadline | None] = contextvars.ContextVar("deadline", default=None)


def check() -> None:
    """Raise ``DeadlineExceeded`` when the request being computed is past its deadline (a 503 once the
    process is shutting down)."""
    current = _CURRENT.get()
    if current is not None and clock.now() > current.at:
        raise late(current.budget_s)
    if STOPPING.is_set():
        raise stopping()


def stop_all() -> None:
    """Shutting down: every computation in this process fails its next check."""
    STOPPING.set()


def stopping() -> DerivdError:
    return DerivdError("the server is shutting down; retry on another instance", code="shutting_down",
                       status=503)


def current() -> deadline | None:
    """The request this thread is computing, if any: for a loop that compares its instant (``at``)
    itself, and for what notes which tiers answered it."""
    return _CURRENT.get()


def late(budget_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"the request ran past its deadline of {budget_s:g} s; stopped there",
                            deadline_s=budget_s)
