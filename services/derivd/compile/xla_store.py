"""Tier 2's compiled executables kept on disk (``xla_cache_dir``), so that they survive restarts.

The compile process answers jax's serialized executable (compile/xla_process.py); the parent keeps it
here, one file per compile, and a later process that needs the same compile loads it without asking
the compile process (which is then not even started). jax's own persistent cache cannot serve here:
an executable it loaded from disk, serialized again for the parent, failed to run there (jaxlib
0.10.2: "NOT_FOUND: Function multiply_reduce_fusion not found"), so the compile process runs without it.

A file's name hashes the compile (the lowered source, the primitives whose lowerings it calls, the
argument shapes, XLA's options), the XLA configuration (jax and jaxlib versions, platform, threads,
``XLA_FLAGS``) and derivd's own source (the lowerings are named, not written, in the compile): a changed
lowering or jaxlib misses. A file that does not load (torn, from elsewhere) is a miss and is removed.
Files are written whole (a temporary file renamed). Nothing is evicted: as with jax's cache, the
directory is the operator's (a few KB to a few MB per executable).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import pickle
import tempfile

log = logging.getLogger("derivd.xla")


def path(settings, job, flags: str) -> pathlib.Path | None:
    """Where ``job``'s executable is kept (``flags``: XLA's, as jax is configured with them), or None
    without a cache directory (``xla_cache_dir=""``)."""
    if not settings.xla_cache_dir:
        return None
    identity = (job, _versions(), settings.xla_platform, flags, _derivd_source())
    digest = hashlib.sha256(pickle.dumps(identity, protocol=4)).hexdigest()
    return pathlib.Path(os.path.expanduser(settings.xla_cache_dir)) / f"derivd-{digest}.xla"


def load(file: pathlib.Path | None) -> tuple | None:
    """The kept ``(executable, in_tree, out_tree)``, or None (none kept, or one that does not load)."""
    if file is None:
        return None
    try:
        with open(file, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as e:  # torn or foreign: compiled again, and written anew
        log.warning("XLA executable %s does not load (%s); compiling it again", file, e)
        file.unlink(missing_ok=True)
        return None


def save(file: pathlib.Path | None, executable: tuple) -> None:
    """Keep ``executable`` (an answer of the compile process) at ``file``; a failure to write costs
    only the next process's compile."""
    if file is None:
        return
    temporary = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=file.parent, prefix=".tmp-", delete=False) as f:
            temporary = f.name
            pickle.dump(executable, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, file)
    except OSError as e:
        log.warning("XLA executable not kept in %s: %s", file.parent, e)
        if temporary is not None:
            pathlib.Path(temporary).unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    """jax's and jaxlib's versions, read without importing jax (a process that finds its executables
    kept loads them while the compile process, not needed, is not started)."""
    return tuple(importlib.metadata.version(name) for name in ("jax", "jaxlib"))


@functools.lru_cache(maxsize=1)
def _derivd_source() -> str:
    """A hash of derivd's Python source: the lowerings a compile names by primitive are in it."""
    root = pathlib.Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
