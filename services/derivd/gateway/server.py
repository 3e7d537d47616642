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
on one socket (a dead one is replaced): what they must agree on (stored
functions, black boxes, rate limits, tapes) lives in Redis, and metrics are
summed across them (``observability``).

Shutdown is bounded. On SIGTERM or SIGINT a gateway process (:class:`Server`) makes its own
computations fail their next deadline check (503 ``shutting_down``: ``deadlines.stop_all``)
before uvicorn waits for the requests in flight, and exits ``SHUTDOWN_BOUND_S`` later whatever
still runs. With several, the parent signals them and kills any still alive a second before its
own bound, so no gateway process outlives it. (uvicorn's own supervisor waits for its processes
without a bound, and runs them without the first step: a runaway request held a core after
SIGTERM.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from derivd import deadlines, observability
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

    def is_closing(self) -> bool:  # asked after every response: not through __getattr__
        return self._transport.is_closing()

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
    # No `server: uvicorn` header: it names the stack to whoever probes it, and uvicorn checks every
    # header of every response against two regular expressions (issue 12: each costs the warm path).
    options = {"server_header": False, **options}
    return uvicorn.Config(app, host=host, port=port, http=http, **options)


SHUTDOWN_BOUND_S = 10.0  # SIGTERM to exit, whatever still runs (Kubernetes' default grace period is 30 s)

log = logging.getLogger("derivd")


class Server(uvicorn.Server):
    """uvicorn's server, whose shutdown stops this process's computations first and is bounded;
    ``on_stop`` (the caller's own stopping: `derivd serve` stops its local workers) runs beside it."""

    def __init__(self, config: uvicorn.Config, on_stop=None):
        super().__init__(config)
        self.on_stop = on_stop

    def handle_exit(self, sig, frame):  # SIGTERM, SIGINT
        stop_computing(self.on_stop)
        super().handle_exit(sig, frame)


def stop_computing(on_stop=None) -> None:
    """Computations still running end at their next check, not at their deadlines; ``on_stop`` runs
    on a thread of its own (it may wait); past ``SHUTDOWN_BOUND_S`` the process exits anyway. Once."""
    if deadlines.STOPPING.is_set():
        return
    deadlines.stop_all()
    if on_stop is not None:
        threading.Thread(target=on_stop, name="derivd-stop", daemon=True).start()

    def bound():  # one numpy call that cannot be stopped, a thread that will not join: exit anyway
        time.sleep(SHUTDOWN_BOUND_S)
        log.error("shutdown took over %g s: exiting now", SHUTDOWN_BOUND_S)
        os._exit(0)

    threading.Thread(target=bound, name="derivd-shutdown-bound", daemon=True).start()


def run_processes(n: int, host: str, port: int, on_stop=None) -> None:
    """``n`` gateway processes (spawned, each building its app with ``app.from_environment``) on one
    listening socket, a dead one replaced, until SIGINT or SIGTERM; then ``stop_computing(on_stop)``
    here, SIGTERM to each, and SIGKILL to any still alive a second before ``SHUTDOWN_BOUND_S``.
    Settings reach them through the environment."""
    if observability.MULTIPROCESS_DIR is None:  # each process would count alone
        raise RuntimeError("several gateway processes need PROMETHEUS_MULTIPROC_DIR set before derivd is imported")
    cfg = config("derivd.gateway.app:from_environment", host, port, factory=True, log_config=None,
                 access_log=False)
    sock = cfg.bind_socket()
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked locks or threads

    def start() -> multiprocessing.Process:
        process = context.Process(target=_gateway_process, args=(cfg, sock), name="derivd-gateway")
        process.start()
        return process

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stop = threading.Event()
    threading.Thread(target=observability.forget_dead_processes, args=(stop,), name="metrics-reaper",
                     daemon=True).start()
    processes = [start() for _ in range(n)]
    try:
        while not stopping.wait(0.5):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:  # its app or socket is broken: so would another's be
                    log.error("gateway process %d failed to start; stopping", process.pid)
                    stopping.set()
                    break
                log.warning("gateway process %d exited (status %s); starting another", process.pid,
                            process.exitcode)
                processes[i] = start()
        stop_computing(on_stop)
        for process in processes:
            process.terminate()
        end = time.monotonic() + SHUTDOWN_BOUND_S - 1.0
        for process in processes:
            process.join(max(0.0, end - time.monotonic()))
            if process.is_alive():
                log.error("gateway process %d still running at the shutdown bound: killing it", process.pid)
                process.kill()
                process.join()
    finally:
        stop.set()
        sock.close()


def _gateway_process(cfg: uvicorn.Config, sock) -> None:
    """One of ``run_processes``' gateway processes: a :class:`Server` on the shared socket. Once it is
    done uvicorn re-raises SIGTERM to the default handler, which ends the process at once (an
    interpreter's orderly exit would wait seconds for the threads it started)."""
    cfg.configure_logging()  # as uvicorn.Config() does when built; this one was unpickled
    Server(cfg).run(sockets=[sock])
