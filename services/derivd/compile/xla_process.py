"""Tier 2's XLA compiles in one supervised child process: a compile can be stopped, and XLA's crash is the child's.

An XLA compile cannot be interrupted, and XLA has crashed (SIGSEGV, jaxlib 0.10.2) compiling programs the
language admits (compile/xla.py guards the shapes known to: ``DEEP_CHAIN``, ``REMAPPED_PATHS_MAX``). In a
thread of the server, a compile that a request in ``xla_tier=always`` started kept burning a core after that
request's 504, and a crash would take the process down with every request in flight. So the compile runs in
a child (``python -m derivd.compile.xla_child``): the parent sends the lowered source and what it needs
(``compile/xla.py`` ``compile_graph``), the child traces and compiles it and answers jax's serialized
executable, which the parent loads in milliseconds.

One child per process that compiles (the gateway, or each worker process), spawned at its first compile
(``start``), so jax is imported there only when tier 2 compiles something, and kept for the next compile.
Compiles go to it one at a time. The compiling thread waits for the answer in slices of ``POLL_S`` and kills
the child (SIGKILL) when the compile's ``Ticket`` is cancelled (the request in ``always`` that waits for it
is past its deadline) or the process is shutting down (``deadlines.STOPPING``): ``Cancelled``. A child that
dies otherwise (XLA crashed) fails that compile alone (``Crashed``: the tape stays on tier 1). A dead child
is replaced at the next compile; a child outlives neither its parent (it watches its parent's pid, since a
parent killed or ``os._exit``-ed runs no clean-up) nor the parent's interpreter (``atexit``).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

from derivd.deadlines import STOPPING

log = logging.getLogger("derivd.xla")

POLL_S = 0.05  # how often a waiting compile looks at its ticket and at the process stopping
# the directory holding the derivd package, put on the child's path (a source checkout is not installed)
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LOCK = threading.Lock()  # the child's state: _CHILD
_BUSY = threading.Lock()  # one compile at a time through the one connection
_CHILD: list = []  # [Popen, Connection] while a child runs


class Cancelled(Exception):
    """The compile was stopped on purpose: its ticket was cancelled, or the process is shutting down."""


class Crashed(Exception):
    """The compile process died during a compile (XLA crashed): this compile fails, the next child serves."""


class Ticket:
    """One compile, which another thread may cancel (``cancel``): the compiling thread then kills the child
    within ``POLL_S``, or never sends the compile if it has not started."""

    __slots__ = ("cancelled",)

    def __init__(self):
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def config_of(settings) -> dict:
    """What the child configures jax with (``xla.configure``): this process's tier-2 settings."""
    return {"xla_threads": settings.xla_threads, "xla_platform": settings.xla_platform}


def start(settings) -> None:
    """Spawn the child if none runs (it imports jax meanwhile); a running child keeps the settings it got."""
    with _LOCK:
        if _CHILD and _CHILD[0].poll() is not None:
            log.warning("the XLA compile process %d had exited (%s); starting another", _CHILD[0].pid,
                        _exit_reason(_CHILD[0].returncode))
            _CHILD.clear()
        if not _CHILD:
            _spawn(config_of(settings))


def _spawn(config: dict) -> None:
    ours, theirs = socket.socketpair()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # on an accelerator: no memory held for compiles
    with theirs:
        process = subprocess.Popen([sys.executable, "-m", "derivd.compile.xla_child", str(theirs.fileno())],
                                   pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL)  # stderr: the parent's (XLA's crash reports)
    connection = Connection(ours.detach())
    connection.send(config)
    _CHILD[:] = [process, connection]
    log.info("XLA compile process %d started", process.pid)


def compile(job, settings, ticket: Ticket | None = None):
    """The child's answer to ``job`` (``xla.compile_job``'s). Raises ``Cancelled`` (the ticket cancelled
    or the process stopping: the child killed) or ``Crashed`` (the child died: XLA crashed)."""
    ticket = ticket or Ticket()
    with _BUSY:
        if ticket.cancelled or STOPPING.is_set():
            raise Cancelled("stopped before it started")
        start(settings)
        process, connection = _CHILD
        try:
            connection.send(job)
            while not connection.poll(POLL_S):  # poll is also true once the child is gone (then EOF)
                if ticket.cancelled or STOPPING.is_set():
                    _stop(process)
                    raise Cancelled("the compile process was stopped")
            return connection.recv()
        except (EOFError, OSError):
            code = _stop(process)
            log.warning("the XLA compile process %d died compiling a tape (%s); the tape stays on tier 1, "
                        "the next compile starts another", process.pid, _exit_reason(code))
            raise Crashed(f"XLA's compile process died ({_exit_reason(code)})") from None


def _stop(process) -> int:
    """Kill the child (if it still runs), reap it and forget it; its exit code."""
    with _LOCK:
        if process.poll() is None:
            process.kill()
        code = process.wait()
        if _CHILD and _CHILD[0] is process:
            _CHILD[1].close()
            _CHILD.clear()
        return code


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def pid() -> int | None:
    """The running child's process id, if one runs."""
    with _LOCK:
        return _CHILD[0].pid if _CHILD and _CHILD[0].poll() is None else None


@atexit.register
def close() -> None:
    """Stop the child, if one runs: the interpreter is leaving."""
    with _LOCK:
        child = list(_CHILD)
    if child:
        _stop(child[0])
