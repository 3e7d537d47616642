"""Local worker processes for ``derivd serve --workers N``, kept alive.

Each worker is a ``spawn`` process (never ``fork``: gRPC's threads and locks
do not survive a fork) listening on its own loopback port, fixed for the life
of the gateway, so the gateway's one channel to
``ipv4:127.0.0.1:p1,127.0.0.1:p2,...`` never changes: a replaced worker comes
back on the same port and gRPC reconnects to it by itself. A worker answers
only callers with the supervisor's ``worker_token`` (the one set, else one made
for this run; ``Supervisor.settings`` carries it to the gateway's pool).

A worker that exits for any reason (killed, crashed, or recycled by its
watchdog after overrunning a deadline) is started again at once, and the
restart counted (``on_restart``). Starting a Python worker takes seconds
(interpreter, numpy, gRPC), so one spare process is kept with all that done:
it takes the dead worker's port within milliseconds, and a new spare starts
behind it; requests wait for a connected worker within their deadline
(``dispatch.pools``). A worker that is alive but has not answered
a health check for longer than any request may run (the request deadline
plus the watchdog's grace plus ``stuck_margin_s``) is stuck holding its
interpreter: it is killed, then replaced the same way. A slot whose workers
keep failing to start is retried with a backoff doubling to 10 s.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import grpc
from pydantic import SecretStr
from grpc_health.v1 import health_pb2, health_pb2_grpc

from derivd.dispatch.pools import FAMILIES
from derivd.workers.server import EXIT_OVERRUN, run_local, run_spare

log = logging.getLogger("derivd.supervisor")


SPARE_DELAY_S = 2.0  # a used spare's successor starts this long after, not beside the replacements


@dataclass
class Slot:
    port: int
    process: multiprocessing.Process | None = None
    started: float = 0.0
    last_healthy: float = 0.0
    backoff_s: float = 0.1
    restart_at: float | None = None  # when a dead worker's replacement is due
    probe: grpc.Future | None = field(default=None, repr=False)  # the health check in flight
    channel: grpc.Channel | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings, n: int, engines=FAMILIES, on_restart=None, health_interval_s: float = 1.0,
                 stuck_margin_s: float = 10.0):
        if n < 1:
            raise ValueError("a supervisor needs at least one worker")
        if settings.worker_token is None:  # a secret for this run: only this gateway may call its workers
            settings = settings.model_copy(update={"worker_token": SecretStr(secrets.token_urlsafe(32))})
        self.settings = settings
        self.engines = set(engines)
        self.on_restart = on_restart or (lambda slot: None)
        self.health_interval_s = health_interval_s
        self.stuck_after_s = settings.request_timeout_s + settings.worker_stop_grace_s + stuck_margin_s
        self.restarts = 0
        self.exit_codes: list[int | None] = []  # of every worker that died, in order (negative: a signal)
        self.slots = [Slot(port) for port in _free_ports(n)]
        self._context = multiprocessing.get_context("spawn")
        self._spare: tuple[multiprocessing.Process, object] | None = None  # (process, its port pipe)
        self._spare_due: float | None = None  # when to start the next spare
        self._spare_ready = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        """The gRPC target naming every worker (the gateway's pool_default)."""
        return "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in self.slots)

    @property
    def pids(self) -> list[int | None]:
        return [s.process.pid if s.process else None for s in self.slots]

    def start(self, timeout_s: float = 60.0) -> "Supervisor":
        """Start every worker, wait until each answers its health check, then watch them."""
        for slot in self.slots:
            self._spawn(slot)
        end = time.monotonic() + timeout_s
        for slot in self.slots:
            while not self._healthy(slot, timeout_s=0.5):
                if time.monotonic() > end or not slot.process.is_alive():
                    self.stop()
                    raise RuntimeError(f"worker on port {slot.port} did not start (exit code "
                                       f"{slot.process.exitcode})")
                time.sleep(0.05)
        self._start_spare()
        self._thread = threading.Thread(target=self._watch, name="derivd-supervisor", daemon=True)
        self._thread.start()
        log.info("%d workers ready at %s", len(self.slots), self.target)
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop watching, then SIGTERM every worker (its computations stop at their next check) and
        SIGKILL stragglers. Safe to call again, from any thread: a second call waits for the first."""
        with self._stop_lock:
            self._stop_workers(grace_s)

    def _stop_workers(self, grace_s: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        procs = [s.process for s in self.slots if s.process is not None]
        if self._spare is not None:
            spare, pipe = self._spare
            pipe.close()  # the spare ends on its pipe's end
            procs.append(spare)
        for p in procs:
            if p.is_alive():
                p.terminate()
        end = time.monotonic() + grace_s
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for s in self.slots:
            if s.channel is not None:
                s.channel.close()
                s.channel = None

    # ------------------------------------------------------------ internals

    def _spawn(self, slot: Slot) -> None:
        """A worker on ``slot``'s port: the spare if one is ready (then a new spare), else a new process."""
        slot.restart_at = slot.probe = None
        spare, self._spare = self._spare, None
        if spare is not None and spare[0].is_alive():
            process, pipe = spare
            pipe.send(slot.port)
            pipe.close()
            self._spare_due = time.monotonic() + SPARE_DELAY_S  # after the replacements, not beside them
        else:
            process = self._context.Process(
                target=run_local, args=(self.settings, f"127.0.0.1:{slot.port}", self.engines),
                name=f"derivd-worker-{slot.port}", daemon=False)
            process.start()
        slot.process = process
        slot.started = slot.last_healthy = time.monotonic()

    @property
    def spare_ready(self) -> bool:
        """Whether the spare is alive and has said its imports are done (it waits for a port)."""
        if self._spare is None:
            return False
        process, pipe = self._spare
        try:
            if not self._spare_ready and pipe.poll():
                self._spare_ready = pipe.recv() == "ready"
        except (EOFError, OSError):
            return False
        return self._spare_ready and process.is_alive()

    def _start_spare(self) -> None:
        self._spare_due, self._spare_ready = None, False
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=run_spare, args=(self.settings, self.engines, theirs),
                                        name="derivd-worker-spare", daemon=False)
        process.start()
        theirs.close()
        self._spare = (process, ours)

    def _watch(self) -> None:
        next_check = time.monotonic()
        while not self._stop.is_set():
            alive = [s.process.sentinel for s in self.slots if s.restart_at is None]
            wait(alive, timeout=max(0.0, min(0.2, next_check - time.monotonic())))
            if self._stop.is_set():
                return
            for slot in self.slots:
                if slot.restart_at is None and not slot.process.is_alive():
                    self._schedule(slot)
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self._spawn(slot)
            if self._spare is not None and not self._spare[0].is_alive():  # the spare itself died
                self._spare = None
                self._spare_due = self._spare_due or time.monotonic() + SPARE_DELAY_S
            if self._spare is None and self._spare_due is not None and time.monotonic() >= self._spare_due:
                self._start_spare()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.health_interval_s
                for slot in self.slots:
                    if slot.restart_at is None:
                        self._check(slot)

    def _schedule(self, slot: Slot) -> None:
        """A worker died: count it and replace it now, or after a backoff if it died young."""
        slot.process.join()
        delay = 0.0
        if time.monotonic() - slot.started < 2.0:  # dying young: maybe it cannot start at all; don't spin
            delay, slot.backoff_s = slot.backoff_s, min(slot.backoff_s * 2, 10.0)
        else:
            slot.backoff_s = 0.1
        log.warning("worker %d on port %d exited (%s); starting a new one in %.1f s", slot.process.pid,
                    slot.port, _describe(slot.process.exitcode), delay)
        slot.restart_at = time.monotonic() + delay
        with self._lock:
            self.restarts += 1
            self.exit_codes.append(slot.process.exitcode)
        self.on_restart(slot)

    def _check(self, slot: Slot) -> None:
        """Collect the last health check's answer and send the next one (never blocks the watch loop)."""
        now = time.monotonic()
        if slot.probe is not None and slot.probe.done():
            if _serving(slot.probe):
                slot.last_healthy = now
            slot.probe = None
        if now - slot.last_healthy > self.stuck_after_s and slot.process.is_alive():
            log.error("worker %d on port %d has not answered for %.0f s: killing it", slot.process.pid, slot.port,
                      now - slot.last_healthy)
            os.kill(slot.process.pid, signal.SIGKILL)
        elif slot.probe is None:
            slot.probe = self._stub(slot).Check.future(health_pb2.HealthCheckRequest(),
                                                       timeout=self.health_interval_s)

    def _healthy(self, slot: Slot, timeout_s: float) -> bool:
        return _serving(self._stub(slot).Check.future(health_pb2.HealthCheckRequest(), timeout=timeout_s))

    def _stub(self, slot: Slot):
        if slot.channel is None:
            slot.channel = grpc.insecure_channel(f"127.0.0.1:{slot.port}", options=[
                ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 500)])
        return health_pb2_grpc.HealthStub(slot.channel)


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held together while chosen, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _serving(probe) -> bool:
    try:
        return probe.result().status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _describe(code: int | None) -> str:
    if code == EXIT_OVERRUN:
        return "recycled after overrunning a deadline"
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"

