"""The compile process of compile/xla_process.py: XLA's compiles for its parent, one at a time.

Run as ``python -m derivd.compile.xla_child FD``, FD a socket to the parent: the first message is the
parent's tier-2 settings (``xla_process.config_of``: jax is configured as the parent's, float64, the
platform, XLA's threads), each next one a compile (``xla.compile_job``), answered in turn. It keeps
nothing on disk: the parent keeps the executables it answers (compile/xla_store.py). It leaves when
the parent closes the socket or goes away (a parent killed or ``os._exit``-ed closes nothing it could
see while this process compiles).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from multiprocessing.connection import Connection
from types import SimpleNamespace

from derivd.compile import xla

ORPHAN_CHECK_S = 1.0


def _leave_with(parent: int) -> None:
    """Exit once the parent is gone (this process is then adopted: its parent id changes)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(0)


def _on_cores(threads: int) -> None:
    """Run on ``threads`` of the cores this process may use (0: all of them). XLA splits a long loop into as
    many parallel parts as the compiling process may run on (its CPU affinity, read once, before the first
    compile), whatever ``XLA_FLAGS`` say: an executable compiled here on one core runs on one thread in the
    parent, as ``xla_threads=1`` means (measured: the partitions are gone from the optimised HLO). Processes
    on one machine start at different cores (by pid), so several workers' compiles do not share one."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if 0 < threads < len(allowed):
        start = os.getpid() % len(allowed)
        os.sched_setaffinity(0, {allowed[(start + i) % len(allowed)] for i in range(threads)})


def main(fd: int) -> None:
    faulthandler.enable()  # a crash of XLA's leaves its Python stack in the parent's log (stderr)
    connection = Connection(fd)
    config = connection.recv()
    _on_cores(config["xla_threads"])  # before any other thread starts: they inherit it
    threading.Thread(target=_leave_with, args=(os.getppid(),), daemon=True).start()
    jax = xla.configure(SimpleNamespace(**config))
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        connection.send(xla.compile_job(jax, job))


if __name__ == "__main__":
    main(int(sys.argv[1]))
