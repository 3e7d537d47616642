"""Sparse Jacobians and Hessians: detect the pattern, colour, compute compressed, decompress.

A Jacobian whose columns fall into c structurally orthogonal groups is c JVPs
(B = J Sᵀ, one batched pass) instead of n; one whose rows do is c VJPs. A
Hessian with a star colouring of c colours is c HVPs. The pattern comes from
``transforms.sparsity`` (valid for every input value), so entries outside it
are exact zeros and are omitted from the COO answer; an entry inside it whose
value happens to be 0 is kept.

Patterns and colourings depend on the program, its signature, the wrt list
and the integer constants (index arrays) only, so they are computed once per
compiled function and kept beside it. When a pattern would pass
``max_pattern_nnz`` entries, the engines fall back to identity seeds (every
column its own colour): the same answer, computed dense.

Colouring runs in Python loops, so its cost is bounded: a Jacobian colouring
walks the edges of the intersection graph (Σ row length²) and is skipped past
``COLORING_MAX_EDGES``; a Hessian gets a star colouring while its pattern has
at most ``STAR_MAX_ENTRIES`` entries (about 10 µs per vertex), past that a
distance-2 colouring (a greedy colouring of the pattern's square, cheaper per
edge and also a star colouring, with a few more colours on some patterns).
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from dataclasses import dataclass

import math

import numpy as np
import scipy.sparse as sp

from derivd.engines import coloring, forward, forward_over_reverse, reverse
from derivd.engines.common import Wrt, check_deadline, chunk_size, require_dense
from derivd.ops.registry import FLOAT
from derivd.transforms.sparsity import PatternTooLarge, hessian_pattern, jacobian_pattern

# ``mode: auto`` looks for sparsity only where colouring can pay for the detection.
AUTO_MIN_SIZE = 16
AUTO_MAX_NODES = 50_000
COLORING_MAX_EDGES = 5_000_000
STAR_MAX_ENTRIES = 300_000


@dataclass
class Plan:
    """A pattern (None: too large, treated as dense) and the colouring that computes it."""

    pattern: sp.csr_matrix | None
    colors: np.ndarray  # one colour per column (forward, star) or per row (reverse)
    direction: str  # "forward" (columns), "reverse" (rows) or "star" (Hessian)
    seconds: float  # spent on detection and colouring by this request (0 when they were cached)
    # A Hessian's with a pattern: its entries (rows, cols), seed matrix and where each entry is read in
    # the compressed product, kept with the plan (per-request work otherwise, as long as the HVPs at n ~ 100)
    layout: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def ncolors(self) -> int:
        return _ncolors(self.colors)

    def info(self, shape) -> dict:
        nnz = self.pattern.nnz if self.pattern is not None else int(np.prod(shape))
        return {"nnz": nnz, "colors": self.ncolors, "pattern_seconds": self.seconds}


def _ncolors(colors: np.ndarray) -> int:
    return int(colors.max()) + 1 if colors.size else 0


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def worth_trying(fn, n: int, m: int) -> bool:
    """Whether ``mode: auto`` should look for a pattern: large enough to save passes, small enough to scan."""
    if min(n, m) < AUTO_MIN_SIZE:
        return False
    return len(fn.program_nodes) <= AUTO_MAX_NODES


def _index_constants(fn, values) -> dict[str, np.ndarray]:
    return {name: np.asarray(values[name]) for name, spec in fn.specs.items()
            if spec.role == "const" and spec.dtype != FLOAT}


def _cached(fn, key, make) -> tuple[object, float]:
    """``make()`` once per compiled function and key: (its result, seconds spent now)."""
    with _LOCK:
        plans = _PLANS.setdefault(fn, {})
        found = plans.get(key)
    if found is not None:
        return found, 0.0
    t0 = time.perf_counter()
    found = make()
    with _LOCK:
        plans[key] = found
    return found, time.perf_counter() - t0


def _key(kind, wrt: Wrt, constants) -> tuple:
    digest = hashlib.sha256()
    for name in sorted(constants):
        digest.update(f"|{name}|{constants[name].shape}|".encode())
        digest.update(np.ascontiguousarray(constants[name], dtype=np.int64).tobytes())
    return (kind, tuple(wrt.names), digest.hexdigest())


def _coloring_work(p: sp.csr_matrix) -> int:
    """Edges of the intersection graph PᵀP a column colouring walks: Σ_rows (row length)²."""
    return int((np.diff(p.indptr).astype(np.int64) ** 2).sum())


def jacobian_plan(fn, values, wrt: Wrt, mode: str, settings) -> Plan:
    """Pattern and colouring for the Jacobian; ``mode`` forward/reverse fixes the direction, auto picks the cheaper."""
    constants = _index_constants(fn, values)
    m = math.prod(fn.out_shape)

    def make():
        try:
            p = jacobian_pattern(fn.graph, wrt.nodes, fn.output, constants, settings.max_pattern_nnz)
        except PatternTooLarge:
            p = None
        cols, rows = np.arange(wrt.n), np.arange(m)
        if p is not None:
            if _coloring_work(p) <= COLORING_MAX_EDGES:
                cols = coloring.column_coloring(p)
            if _coloring_work(p.T.tocsr()) <= COLORING_MAX_EDGES:
                rows = coloring.row_coloring(p)
        return p, cols, rows, _ncolors(cols), _ncolors(rows)

    (p, cols, rows, ncols, nrows), seconds = _cached(fn, _key("jacobian", wrt, constants), make)
    if mode == "forward" or (mode == "auto" and ncols <= nrows):
        return Plan(p, cols, "forward", seconds)
    return Plan(p, rows, "reverse", seconds)


def hessian_plan(fn, values, wrt: Wrt, settings) -> Plan:
    constants = _index_constants(fn, values)

    def make():
        try:
            p = hessian_pattern(fn.graph, wrt.nodes, fn.output, constants, settings.max_pattern_nnz)
        except PatternTooLarge:
            p = None
        if p is None or _coloring_work(p) > COLORING_MAX_EDGES:
            colors = np.arange(wrt.n)
        elif p.nnz <= STAR_MAX_ENTRIES:
            colors = coloring.star_coloring(p)
        else:
            colors = coloring.column_coloring(p)  # distance-2: columns of H structurally orthogonal
        if p is None:
            return p, colors, None
        rows, cols = _entries(Plan(p, colors, "star", 0.0), (wrt.n, wrt.n))
        return p, colors, (rows, cols, coloring.seeds(colors), coloring.star_sources(rows, cols, colors))

    (p, colors, layout), seconds = _cached(fn, _key("hessian", wrt, constants), make)
    return Plan(p, colors, "star", seconds, layout)


def _entries(plan: Plan, shape) -> tuple[np.ndarray, np.ndarray]:
    if plan.pattern is None:
        rows, cols = np.indices(shape)
        return rows.ravel(), cols.ravel()
    coo = plan.pattern.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64)


def jacobian(fn, values, wrt_names, plan: Plan, settings):
    """f(x) and the Jacobian's entries (rows, cols, values) on ``plan``'s pattern, by compressed passes."""
    wrt = fn.wrt(wrt_names)
    m = math.prod(fn.out_shape)
    if plan.pattern is None:
        require_dense(m, wrt.n, "Jacobian with no usable sparsity pattern", settings)
    rows, cols = _entries(plan, (m, wrt.n))
    seed = coloring.seeds(plan.colors)
    if plan.direction == "forward":
        y, b, seconds = _blocks(lambda s: forward.jvps(fn, values, wrt_names, s), seed, fn, settings)
        vals = coloring.decompress_columns(rows, cols, plan.colors, b.T)
    else:
        y, b, seconds = _blocks(lambda s: reverse.vjps(fn, values, wrt_names, s), seed, fn, settings)
        vals = coloring.decompress_rows(rows, cols, plan.colors, b)
    return y, rows, cols, vals, seconds


def _blocks(run, seed: np.ndarray, fn, settings):
    """Run ``run`` over the seed rows in padded chunks of one size (one tape): (y, stacked results, seconds)."""
    k = seed.shape[0]
    b = chunk_size(max(k, 1), fn.widest_node_bytes * 3, settings.forward_chunk_bytes)
    out, seconds, y = [], 0.0, None
    for start in range(0, max(k, 1), b):
        check_deadline()
        chunk = seed[start:start + b]
        if chunk.shape[0] < b:
            chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], seed.shape[1]))])
        y, block, s = run(chunk)
        seconds += s
        out.append(block[: max(0, min(b, k - start))])
    return y, np.concatenate(out, axis=0), seconds


def hessian(fn, values, wrt_names, plan: Plan, settings):
    """f(x), grad f(x) and the Hessian's entries on ``plan``'s pattern, from one HVP per colour."""
    wrt = fn.wrt(wrt_names)
    if plan.pattern is None:
        require_dense(wrt.n, wrt.n, "Hessian", settings)
    if plan.layout is None:
        rows, cols = _entries(plan, (wrt.n, wrt.n))
        seed, sources = coloring.seeds(plan.colors), coloring.star_sources(rows, cols, plan.colors)
    else:
        rows, cols, seed, sources = plan.layout
    y, grads, b, seconds = forward_over_reverse.hvp_blocks(fn, values, wrt_names, seed, settings, gradient=True)
    vals = np.ascontiguousarray(b.T).reshape(-1)[sources]
    return y, grads, rows, cols, vals, seconds
