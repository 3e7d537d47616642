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


def main(fd: int) -> None:
    faulthandler.enable()  # a crash of XLA's leaves its Python stack in the parent's log (stderr)
    threading.Thread(target=_leave_with, args=(os.getppid(),), daemon=True).start()
    connection = Connection(fd)
    jax = xla.configure(SimpleNamespace(**connection.recv()))
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        connection.send(xla.compile_job(jax, job))


if __name__ == "__main__":
    main(int(sys.argv[1]))
