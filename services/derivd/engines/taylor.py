"""Taylor mode: what the taylor transform answers, one pass per block of directions.

Along a direction v the transform gives c_0..c_K of f(x + t v), c_k =
(1/k!) d^k/dt^k f(x + t v) at t = 0, so the k-th directional derivative is
k! c_k. A block of B directions is one pass (the series' batch axis), chunked
so that a pass stays within ``forward_chunk_bytes``; the last chunk is padded
with zero directions so one tape serves every chunk.

Everything else is read off univariate series:

* first order (``mode: "taylor"`` on gradient, jacobian, jvp): c_1 = J v, the
  Jacobian from the unit directions;
* Hessian-vector products, by polarisation of c_2(d) = ½ dᵀ H d:
  (H v)_i = (c_2(v + s e_i) - c_2(v - s e_i)) / (2 s), 2n directions per v;
* every derivative tensor of order e <= d at once (Griewank, Utke & Walther,
  "Evaluating higher derivative tensors by forward propagation of univariate
  Taylor series", Math. Comp. 69, 2000): along the binom(n+d-1, d) directions
  j in N^n with |j| = d, for every multi-index i with 1 <= |i| <= d,

      ∂^i f = Σ_{|j|=d} γ_ij c_{|i|}(j),
      γ_ij = Σ_{0 < k <= i} (-1)^{|i-k|} binom(i, k) binom(d k / |k|, j) (|k| / d)^{|i|},

  multi-index binomials being products over coordinates (generalised binomials
  for the real d k_l / |k|). γ_ij vanishes unless supp j ⊆ supp i, so it depends
  only on i and j restricted to supp i: a small table per d, exact in rationals.
  The Hessian is the case d = 2. The sum is taken in extended precision and
  rounded once, and an entry within its rounding bound of 0 is 0
  (``_interpolate``), so exact entries come back exact where the series are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import combinations, combinations_with_replacement, product

import numpy as np

from derivd.engines.common import Wrt, check_deadline, chunk_size, require_scalar
from derivd.errors import LimitExceeded, ShapeError
from derivd.transforms.taylor import taylor as taylor_transform

MAX_TENSOR_ORDER = 4


def _tape(fn, wrt: Wrt, order: int, batch: tuple[int, ...]):
    """Tape (point, input series (order, *batch, *shape) per input) -> (f, output series)."""

    def build():
        lead = (order,) + batch
        seeds = [fn.extra_input(f"__series_{name}", lead + shape) for name, shape in zip(wrt.names, wrt.shapes)]
        (ys,) = taylor_transform(fn.graph, wrt.nodes, seeds, [fn.output])
        if ys is None:
            ys = fn.graph.apply("zeros", (), {"shape": lead + fn.out_shape})
        return seeds, [fn.output, ys]

    return fn.tape(("taylor", tuple(wrt.names), order, batch), build)


def _value(fn, values):
    tape, seconds = fn.eval_tape()
    return np.asarray(fn.run(tape, values)[0], dtype=np.float64), seconds


def along(fn, values, wrt: Wrt, order: int, count: int, block, settings):
    """f(x) and the coefficients c_1..c_order of f(x + t d) for ``count`` directions d.

    ``block(start, stop)`` returns directions ``start..stop-1`` as a ``(stop-start, n)``
    array, so a large set (the unit vectors) is never built whole. Returns
    ``(y, c, seconds)`` with ``c`` of shape ``(order, count, m)``.
    """
    m = math.prod(fn.out_shape)
    if count == 0 or order == 0:
        y, seconds = _value(fn, values)
        return y, np.zeros((order, count, m)), seconds
    b = chunk_size(count, fn.widest_node_bytes * (order + 1) * 4, settings.forward_chunk_bytes)
    tape, seconds = _tape(fn, wrt, order, (b,))
    y, parts = None, []
    for start in range(0, count, b):
        check_deadline()
        stop = min(start + b, count)
        seeds = np.zeros((order, b, wrt.n))
        seeds[0, : stop - start] = block(start, stop)
        y, ys = fn.run(tape, values, *wrt.split(seeds, (order, b)))
        parts.append(np.asarray(ys, dtype=np.float64).reshape(order, b, m)[:, : stop - start])
    return np.asarray(y, dtype=np.float64), np.concatenate(parts, axis=1), seconds


def coefficients(fn, values, wrt_names, v: dict[str, np.ndarray], order: int, settings):
    """f(x) and the (order+1, m) coefficients c_0..c_order of f(x + t v)."""
    wrt = fn.wrt(wrt_names)
    direction = wrt.join([v[n] for n in wrt.names], ())[None]
    y, c, seconds = along(fn, values, wrt, order, 1, lambda a, b: direction, settings)
    return y, np.concatenate([y.reshape(1, -1), c[:, 0]]), seconds


def jvp(fn, values, wrt_names, v: dict[str, np.ndarray], settings):
    """f(x) and J v as the first Taylor coefficient along v."""
    y, c, seconds = coefficients(fn, values, wrt_names, v, 1, settings)
    return y, c[1], seconds


def jacobian(fn, values, wrt_names, settings):
    """f(x) and the (m, n) Jacobian: first coefficients along the unit directions."""
    wrt = fn.wrt(wrt_names)
    eye = np.eye(wrt.n)
    y, c, seconds = along(fn, values, wrt, 1, wrt.n, lambda a, b: eye[a:b], settings)
    return y, c[0].T, seconds


def gradient(fn, values, wrt_names, settings):
    require_scalar(fn.out_shape, "gradient")
    y, jac, seconds = jacobian(fn, values, wrt_names, settings)
    return y, fn.wrt(wrt_names).split(jac[0]), seconds


def hvps(fn, values, wrt_names, directions: np.ndarray, settings):
    """f(x) and H v for each row v of ``directions`` (k, n), by polarisation of c_2."""
    require_scalar(fn.out_shape, "hvp")
    wrt = fn.wrt(wrt_names)
    n, k = wrt.n, len(directions)
    steps = [float(np.max(np.abs(v), initial=0.0)) or 1.0 for v in directions]

    def block(start, stop):
        rows = []
        for r in range(start, stop):  # row r: direction r // (2n), index i, sign +/-
            v, rest = divmod(r, 2 * n)
            i, minus = divmod(rest, 2)
            d = directions[v].copy()
            d[i] += -steps[v] if minus else steps[v]
            rows.append(d)
        return np.array(rows).reshape(stop - start, n)

    y, c, seconds = along(fn, values, wrt, 2, 2 * n * k, block, settings)
    c2 = c[1, :, 0].reshape(k, n, 2)
    return y, (c2[..., 0] - c2[..., 1]) / (2 * np.array(steps)[:, None]), seconds


def tensors(fn, values, wrt_names, order: int, settings):
    """f(x) and the derivative tensors of orders 1..order (Griewank–Utke–Walther).

    The tensor of order e has shape ``(n,)*e`` for an output of one element, else
    ``(m,) + (n,)*e``. Returns ``(y, tensors, directions used, seconds)``.
    """
    if not 1 <= order <= MAX_TENSOR_ORDER:
        raise ShapeError(f"derivative tensors are available for orders 1 to {MAX_TENSOR_ORDER}; got {order}",
                         code="invalid_order", order=order)
    wrt = fn.wrt(wrt_names)
    n, m = wrt.n, math.prod(fn.out_shape)
    count = math.comb(n + order - 1, order)
    if count > settings.max_taylor_directions:
        raise LimitExceeded(
            f"derivative tensors of order {order} in n={n} variables need {count} Taylor directions, over the "
            f"limit max_taylor_directions={settings.max_taylor_directions}; differentiate with respect to "
            f"fewer inputs (wrt) or ask a lower order",
            limit="max_taylor_directions", value=count, max=settings.max_taylor_directions, n=n, order=order)
    entries = m * sum(n**e for e in range(1, order + 1))
    if entries > settings.max_tensor_entries:
        raise LimitExceeded(
            f"derivative tensors of order <= {order} with n={n} and {m} outputs hold {entries} numbers, over "
            f"the limit max_tensor_entries={settings.max_tensor_entries}",
            limit="max_tensor_entries", value=entries, max=settings.max_tensor_entries)
    if n == 0:  # nothing is differentiated: empty tensors
        y, seconds = _value(fn, values)
        return y, [np.zeros(((m,) if m > 1 else ()) + (0,) * e) for e in range(1, order + 1)], 0, seconds
    plan = _plan(n, order)
    y, c, seconds = along(fn, values, wrt, order, count, lambda a, b: plan.lattice[a:b], settings)
    out = []
    for e in range(1, order + 1):
        rows, cols, weights, entry_rows = plan.orders[e - 1]
        t = np.moveaxis(_interpolate(rows, weights, c[e - 1][cols], order)[entry_rows].reshape((n,) * e + (m,)), -1, 0)
        out.append(t[0] if m == 1 else t)
    return y, out, count, seconds


def _interpolate(rows, weights, terms, d: int) -> np.ndarray:
    """Σ_j γ_ij c(j) for every multi-index row i: summed in extended precision and rounded once, and
    0 where it is within the interpolation's rounding bound 4d·2⁻⁵³·Σ_j |γ_ij c(j)| of 0.

    Why: the sum cancels (γ has both signs and thirds), so in float64 an entry that is exactly 0
    came out as ±1e-16 and 0.3 as 0.29999999999999993. Summed in ``np.longdouble`` (64-bit
    mantissa on x86) and rounded once, an exact entry comes back as the float nearest it whenever
    the series c(j) are exact; a sum within the bound of 0 cannot be told from 0 and is 0. Either
    way an entry moves by at most that bound, the rounding level the float64 sum had anyway.
    """
    size = int(rows.max(initial=-1)) + 1
    terms = weights.astype(np.longdouble)[:, None] * terms.astype(np.longdouble)
    total = np.zeros((size, terms.shape[1]), dtype=np.longdouble)
    np.add.at(total, rows, terms)
    scale = np.zeros((size, terms.shape[1]))
    np.add.at(scale, rows, np.abs(terms).astype(np.float64))
    out = total.astype(np.float64)
    out[np.abs(out) <= 4 * d * np.finfo(np.float64).eps / 2 * scale] = 0.0
    return out


def hessian(fn, values, wrt_names, settings):
    """f(x), the gradient and the Hessian: the derivative tensors of order 2."""
    require_scalar(fn.out_shape, "hessian")
    y, (g, h), _, seconds = tensors(fn, values, wrt_names, 2, settings)
    return y, g.reshape(-1), h.reshape(h.shape[-2:]), seconds


# ---------------------------------------------------------------- interpolation (GUW 2000)


@dataclass
class Plan:
    """The directions and the weights turning their coefficients into tensors, for (n, d).

    ``lattice``: the (count, n) directions j, |j| = d. ``orders[e-1]``: for order e, the
    sparse weights (rows = multi-indices of order e as sorted index tuples, cols =
    directions, weights = γ) and, per tensor entry in C order, its multi-index row.
    """

    lattice: np.ndarray
    orders: list


@lru_cache(maxsize=16)
def _plan(n: int, d: int) -> Plan:
    lattice_tuples = _sorted_tuples(n, d)
    count = len(lattice_tuples)
    lattice = np.zeros((count, n))
    np.add.at(lattice, (np.repeat(np.arange(count), d), lattice_tuples.reshape(-1)), 1.0)
    lattice_rank = _ranks(lattice_tuples, n)
    orders = []
    for e in range(1, d + 1):
        multis = _sorted_tuples(n, e)
        rank = _ranks(multis, n)
        rows, cols, weights = [], [], []
        for parts in range(1, min(e, n) + 1):  # multi-indices of order e with `parts` distinct variables
            supports = np.array(list(combinations(range(n), parts)), dtype=np.int64).reshape(-1, parts)
            for i in _compositions(e, parts):
                if 0 in i:
                    continue
                r = rank[_codes(np.repeat(supports, i, axis=1), n)]
                for j, gamma in _gammas(i, d):
                    rows.append(r)
                    cols.append(lattice_rank[_codes(np.repeat(supports, j, axis=1), n)])
                    weights.append(np.full(len(r), _extended(gamma), dtype=np.longdouble))
        entries = np.sort(np.indices((n,) * e).reshape(e, -1).T, axis=1)
        orders.append((np.concatenate(rows), np.concatenate(cols), np.concatenate(weights), rank[_codes(entries, n)]))
    return Plan(lattice, orders)


def _sorted_tuples(n: int, d: int) -> np.ndarray:
    """Every multiset of d variables as a sorted index tuple, in lexicographic order: (count, d)."""
    return np.array(list(combinations_with_replacement(range(n), d)), dtype=np.int64).reshape(-1, d)


def _codes(tuples: np.ndarray, n: int) -> np.ndarray:
    """Sorted index tuples as numbers in base n (a dense key: at most n^d)."""
    return tuples @ (n ** np.arange(tuples.shape[1] - 1, -1, -1, dtype=np.int64))


def _ranks(tuples: np.ndarray, n: int) -> np.ndarray:
    """A table from code to position in ``tuples`` (-1 for codes of unsorted tuples)."""
    table = np.full(max(n ** tuples.shape[1], 1), -1, dtype=np.int64)
    table[_codes(tuples, n)] = np.arange(len(tuples))
    return table


@lru_cache(maxsize=None)
def _gammas(i: tuple[int, ...], d: int) -> tuple[tuple[tuple[int, ...], Fraction], ...]:
    """The nonzero γ_ij for a multi-index i with full support (all parts positive) and every
    j with |j| = d on that support, computed exactly in rationals."""
    s, e = len(i), sum(i)
    out = []
    for j in _compositions(d, s):
        total = Fraction(0)
        for k in product(*[range(p + 1) for p in i]):
            size = sum(k)
            if size == 0:
                continue
            term = Fraction((-1) ** (e - size) * math.prod(math.comb(p, q) for p, q in zip(i, k)))
            for q, jl in zip(k, j):
                term *= _binom(Fraction(d * q, size), jl)
            total += term * Fraction(size, d) ** e
        if total:
            out.append((j, total))
    return tuple(out)


def _extended(q: Fraction) -> np.longdouble:
    """A rational weight in extended precision (one rounding, not the two of float(q) then widening)."""
    return np.longdouble(q.numerator) / np.longdouble(q.denominator)


def _compositions(total: int, parts: int):
    """Every tuple of ``parts`` non-negative integers summing to ``total``."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total, -1, -1):
        for rest in _compositions(total - first, parts - 1):
            yield (first,) + rest


def _binom(z: Fraction, k: int) -> Fraction:
    """The generalised binomial coefficient z (z-1) ... (z-k+1) / k!."""
    out = Fraction(1)
    for t in range(k):
        out *= (z - t) / (t + 1)
    return out
