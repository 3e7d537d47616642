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
"""

from __future__ import annotations

import contextvars
import threading

from derivd import clock
from derivd.errors import DeadlineExceeded, DerivdError

# (instant on clock.now(), budget in seconds) of the request this thread is computing, if it has one.
_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("deadline", default=None)
STOPPING = threading.Event()  # set once: the process is shutting down


class deadline:
    """``with deadline(at, budget_s)``: work in the block stops at its next check once ``at`` (on
    ``clock.now()``'s scale) is past. A class, not a generator: it is around every request."""

    __slots__ = ("_value", "_token")

    def __init__(self, at: float | None, budget_s: float):
        self._value = None if at is None else (at, budget_s)

    def __enter__(self) -> None:
        self._token = _DEADLINE.set(self._value)

    def __exit__(self, *exc) -> None:
        _DEADLINE.reset(self._token)


def check() -> None:
    """Raise ``DeadlineExceeded`` when the request being computed is past its deadline (a 503 once the
    process is shutting down)."""
    current = _DEADLINE.get()
    if current is not None and clock.now() > current[0]:
        raise late(current[1])
    if STOPPING.is_set():
        raise stopping()


def stop_all() -> None:
    """Shutting down: every computation in this process fails its next check."""
    STOPPING.set()


def stopping() -> DerivdError:
    return DerivdError("the server is shutting down; retry on another instance", code="shutting_down",
                       status=503)


def current() -> tuple[float, float] | None:
    """(instant, budget) of this thread's request, for a loop that compares the instant itself."""
    return _DEADLINE.get()


def late(budget_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"the request ran past its deadline of {budget_s:g} s; stopped there",
                            deadline_s=budget_s)
