"""How the REST gateway is served: uvicorn with httptools, one socket write per response, in one
process or in several sharing one listening socket.

uvicorn writes a response's head when the app sends ``http.response.start`` and
its body on ``http.response.body``: two ``send`` syscalls and two TCP segments,
so the client wakes twice. On loopback and small answers those writes were a
quarter of a warm request's server time (issue 6's bench: 4.5k -> 5.7k
gradients/s with 8 clients). ``CoalescingHttpTools`` gathers what a connection
writes within one event-loop iteration and sends it at the end of the
iteration: the head and body of a response leave together; nothing waits
longer than the current iteration.

Below the coalescing, ``connection.GuardedHttpTools`` bounds what one connection may cost (head
size and count, head and body time, body size as it streams) and answers refusals after the
answers already owed on the connection; its limits come from the app's settings.

One Python process serves REST on one core. ``run_processes`` starts N of them
on one socket under uvicorn's own supervisor (a dead one is replaced): what
they must agree on (stored functions, black boxes, rate limits, tapes) lives
in Redis, and metrics are summed across them (``observability``).
"""

from __future__ import annotations

import asyncio
import functools
import threading

import uvicorn
from uvicorn.supervisors import Multiprocess

from derivd import observability
from derivd.config import Settings, get_settings
from derivd.gateway.connection import ConnectionLimits, GuardedHttpTools


class _CoalescingTransport:
    """A transport whose ``write`` is deferred to the end of the loop iteration and joined."""

    __slots__ = ("_transport", "_pending", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._pending, self._loop = transport, [], loop

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()  # an answer written just before closing still goes out
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name):  # everything else (flow control, extra info, abort) is the real one's
        return getattr(self._transport, name)


class CoalescingHttpTools(GuardedHttpTools):
    """uvicorn's httptools protocol, guarded, over a ``_CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(_CoalescingTransport(transport, asyncio.get_running_loop()))


def config(app, host: str, port: int, settings: Settings | None = None, **options) -> uvicorn.Config:
    """The one uvicorn configuration of the gateway (``derivd serve`` and the tests' live servers).
    Connection limits come from ``settings``, else from the app's own (a ``Gateway``), else from the
    environment (an app built by a factory in each process reads the same)."""
    settings = settings or getattr(getattr(app, "service", None), "settings", None) or get_settings()
    http = functools.partial(CoalescingHttpTools, limits=ConnectionLimits.from_settings(settings))
    return uvicorn.Config(app, host=host, port=port, http=http, **options)


def run_processes(n: int, host: str, port: int) -> None:
    """``n`` gateway processes (spawned, each building its app with ``app.from_environment``) on one
    listening socket, until SIGINT or SIGTERM. Settings reach them through the environment."""
    if observability.MULTIPROCESS_DIR is None:  # each process would count alone
        raise RuntimeError("several gateway processes need PROMETHEUS_MULTIPROC_DIR set before derivd is imported")
    cfg = config("derivd.gateway.app:from_environment", host, port, factory=True, workers=n, log_config=None,
                 access_log=False)
    stop = threading.Event()
    threading.Thread(target=observability.forget_dead_processes, args=(stop,), name="metrics-reaper",
                     daemon=True).start()
    try:
        Multiprocess(cfg, sockets=[cfg.bind_socket()]).run()
    finally:
        stop.set()
