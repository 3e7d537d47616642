"""Finite differences over a batched black box ``f(X) -> Y`` (X: (p, n) points, Y: (p, m)).

The middle of the three finite-difference modules: derivatives of a batched
callable with error estimates and step choice, knowing no endpoint or request
(that is ``finite_answers``); its weights come from ``stencils``.

Every derivative here is assembled from one-dimensional problems along lines,
g(t) = f(x + t·d): a Jacobian column is g' along d = h_i e_i, a JVP is g' along
d = t·v, a Hessian diagonal entry is g'' along a_i e_i, and mixed second
derivatives come from g'' along two-term directions (polarisation, below). A
line's derivative is a stencil (:mod:`.stencils`), g^(q)(0) ≈ Σ_j w_j g(s_j),
in units where t = 1 is the whole displacement d, applied to differences
g(s_j) - f(x) (the weights sum to zero only up to rounding, and Σ_j w_j f(x)
would add eps·|f|/h^q to every result).

Value, check and error
----------------------
The reported value is the stencil of the requested method and accuracy order p
(with ``extrapolation``, the Richardson extrapolant, below). Its error is
estimated from the evaluations, per entry:

* truncation T: the grid is extended outward by the fewest integer offsets that
  give a stencil of higher order (one point for odd q, a symmetric pair for
  even q central stencils), the *check*; T = |check - value| estimates the
  value's truncation error, the check's own being of higher order in h.
* rounding R: each evaluation of f carries noise
  ε = eps · hypot(max_j |f(x + s_j d)|, ‖x_k ∂_k f‖₂ over the coordinates k the
  line moves). The first term is the rounding of the result; the second the
  first-order effect of rounding the moved inputs inside f (sin(3x) computes
  3x, Rosenbrock x_{i+1} - x_i², and both amplify it), with ∂_k f from the
  same evaluations. The stencil makes R = ‖w‖₂ ε / h^q: the size of a sum of
  independent roundings, not their worst case. For a Jacobian, ε of each row is
  raised to the noise the rows' check differences show across columns where
  that is larger (a sum whose terms cancel, |f| ≪ Σ|terms|, hides its noise
  from the model).
* E = hypot(T, R). Entries combined from several lines (Hessian off-diagonals,
  HVP components) add the lines' signed check differences, whose truncation
  partly cancels there, and their R in quadrature.

E is honest by construction where truncation dominates (T measures it). Where
rounding dominates, the error is a random variable and E is its scale: for
correctly rounded f, eps·|f| is about 4x the typical rounding of one
evaluation, so on smooth test functions the median of E / error is 2-6, E is
never below about half the error, and in up to a third of cases (the highest
orders, whose errors are a few ulps) the error happens to be more than 10x
smaller than E. Functions whose roundings cancel between lines by structure
(Rosenbrock's Hessian) see larger ratios.

Step
----
The error at step h is about |C| h^p |f^(p+q)| + R(h) with R(h) ∝ h^-q,
minimal where the truncation is q/p of the rounding. With no step given, each
coordinate starts from the balance for a function varying on the scale
L = max(|x_i|, 1), that is f^(k) ~ f / L^k:

    h_0 = L · (q · eps · ‖w‖₂ / (p · |C|))^(1/(p+q)),

rounded to a power of two, so that x_i + s·h is exactly representable except
where it crosses a power of two. The displacements actually applied,
fl(x_i + s h) - x_i, are measured, and single-coordinate stencils are
recomputed on them (Fornberg on the actual offsets): the classical
"h = (x + h) - x", made exact for a whole grid. If T at h_0 shows truncation
dominating, the measured T and R give the balanced step λ·h_0 with
λ = (q R / (p T))^(1/(p+q)) (a power of two, at least 2^-10), and one more
round is spent on the lines whose predicted error drops at least 2x (|x| much
larger than the function's length scale, e.g. exp at 10; or a singularity
near x, as for the Squire–Trapp function). A given ``step`` is absolute (for a
direction, the largest component of the displacement) and never refined.

Richardson extrapolation
------------------------
With ``extrapolation``, the base stencil is evaluated at the steps h, 2h, 4h
and Richardson's tableau eliminates the leading error terms (in h^2 for
central stencils, in h for one-sided ones). The tableau's final extrapolant is
a combination of f on the union of the three grids that is exact on
polynomials of the highest degree that grid admits, so it *is* the unique
stencil of that grid, which is how it is computed. The check is the next
extrapolant (the grid extended as above): the error comes from successive
extrapolants, as in numdifftools, but is the error of the value reported
rather than of the one before it.

Second derivatives
------------------
Diagonal entries are q = 2 stencils along a_i e_i. An off-diagonal Hessian
entry comes from the second derivative along d = a_i e_i + a_j e_j,

    d^T H d = a_i² H_ii + 2 a_i a_j H_ij + a_j² H_jj,

one line per pair, the diagonal being computed anyway. A Hessian-vector
product uses the lines d± = a_i e_i ± b v, whose difference cancels the rest:
d+^T H d+ - d-^T H d- = 4 a_i b (Hv)_i, so 2n lines and no Hessian. The
gradient the noise model needs comes from the first-derivative stencil on the
same points.

Sparse Jacobians
----------------
Columns of one colour (no two with an entry in one row of the pattern) are
perturbed together, each by its own step; row r then depends on the single
column i of that colour in which it has an entry, and J[r, i] is read from the
colour's line with column i's step and weights. :func:`color_columns` is the
greedy largest-first distance-1 colouring.

Accuracy (bench/fd_accuracy.py; relative error, evaluations of f per coordinate)
---------------------------------------------------------------------------------
On exp at 1, sin at 0.5, 1 and 2, the Squire–Trapp function at 1.5 and the
extended Rosenbrock gradient (n = 20):

* plain central differences, ``FDOptions()``: 3e-13 .. 4e-11 (≤ 1e-9), with
  3 evaluations per coordinate plus f(x), 6 on Squire–Trapp (refined step);
* the high-accuracy setting, ``FDOptions(method="central", order=6)``:
  4e-15 .. 2e-13 (≤ 1e-12), with 7 per coordinate, 13 on Squire–Trapp;
  central order 4 reaches 4e-14 .. 5e-13 with 5 (10);
* numdifftools' default: 1e-15 .. 2e-13 with 31 per coordinate (30n + 1).

Cost and batching
-----------------
Each round sends all of its points, f(x) included, to f in one call; identical
points (within a round, and across rounds where power-of-two steps make grids
overlap) are evaluated once. :func:`plan_evaluations` bounds the distinct
points before anything runs: 1 for f(x) plus, per round (two when the step is
chosen, one when given), the lines times the grid's non-zero offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from ..errors import LimitExceeded, ShapeError, ValidationFailed
from . import stencils
from .coloring import color_columns

BatchFunction = Callable[[np.ndarray], np.ndarray]

EPS = float(np.finfo(np.float64).eps)
KINDS = ("jacobian", "gradient", "jvp", "hessian", "hvp")
MAX_ORDER = 16
RICHARDSON_RATIO = 2
RICHARDSON_LEVELS = 3
REFINE_GAIN = 2.0  # refine a step only if the error model predicts at least this gain
MAX_SHRINK = 2.0**-10  # a refinement shrinks a step by at most this factor
POOL_MIN_LINES = 5  # lines of one output needed to estimate its noise from the data
NOISE_LIKE = 30.0  # check differences beyond this multiple of the modelled noise count as truncation


@dataclass(frozen=True)
class FDOptions:
    method: str = "central"  # "central" | "forward" | "backward"
    order: int = 2  # accuracy order p
    step: float | None = None  # None = chosen per coordinate
    extrapolation: bool = False  # Richardson

    def __post_init__(self):
        if self.method not in stencils.METHODS:
            raise ValidationFailed(
                f"fd.method must be one of {', '.join(stencils.METHODS)}, not {self.method!r}",
                field="fd.method",
            )
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 1 <= self.order <= MAX_ORDER:
            raise ValidationFailed(f"fd.order must be an integer from 1 to {MAX_ORDER}", field="fd.order")
        if self.method == "central" and self.order % 2:
            raise ValidationFailed(
                f"central differences have even accuracy orders; fd.order {self.order} is odd", field="fd.order"
            )
        if self.step is not None and (
            isinstance(self.step, bool)
            or not isinstance(self.step, (int, float))
            or not (np.isfinite(self.step) and self.step > 0)
        ):
            raise ValidationFailed("fd.step must be a positive finite number or null", field="fd.step")


@dataclass
class FDResult:
    value: np.ndarray  # f(x), shape (m,)
    derivative: np.ndarray  # jacobian (m, n) / jvp (m,) / gradient (n,) / hessian (n, n) / hvp (n,)
    error: np.ndarray  # per-entry absolute error estimate, same shape as derivative
    evaluations: int  # distinct points of f evaluated


@dataclass(frozen=True)
class Scheme:
    """The stencils of one derivative order under given options, on one integer grid.

    ``offsets`` is every offset evaluated (0, the centre, included); ``value``,
    ``check`` and ``slope`` are weights on them: the reported stencil, the
    higher-order one on the extended grid, and the first derivative on the
    value's grid (for the noise model of second derivatives).
    """

    q: int
    offsets: np.ndarray
    in_value: np.ndarray  # mask of the value stencil's grid within offsets
    value: np.ndarray
    check: np.ndarray
    slope: np.ndarray
    order: int
    constant: float

    @property
    def points(self) -> int:
        """Evaluations per line: the non-zero offsets."""
        return int(np.count_nonzero(self.offsets))

    @property
    def balance(self) -> float:
        """h_0 / L: the step balancing truncation and rounding for f^(k) ~ f / L^k."""
        p, q = self.order, self.q
        return (q * EPS * float(np.linalg.norm(self.value)) / (p * abs(self.constant))) ** (1.0 / (p + q))

    def weights(self, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value, check, slope) weights for lines whose actual offsets are rows of ``actual``.

        Rows equal to the nominal grid keep the exact weights; others (a
        displacement rounded where x + s h crossed a power of two) get weights
        recomputed on the offsets actually applied.
        """
        k = actual.shape[0]
        value = np.tile(self.value, (k, 1))
        check = np.tile(self.check, (k, 1))
        slope = np.tile(self.slope, (k, 1))
        for row in np.flatnonzero(np.any(actual != self.offsets, axis=1)):
            grid = actual[row]
            value[row, self.in_value] = stencils.coefficients(grid[self.in_value], self.q)
            check[row] = stencils.coefficients(grid, self.q)
            slope[row, self.in_value] = stencils.coefficients(grid[self.in_value], 1)
        return value, check, slope


@lru_cache(maxsize=None)
def scheme(method: str, order: int, extrapolation: bool, q: int) -> Scheme:
    """The grid and stencils for f^(q) under (method, order, extrapolation)."""
    base = stencils.family_offsets(method, order, q)
    if extrapolation:
        grid = sorted({s * RICHARDSON_RATIO**k for s in base for k in range(RICHARDSON_LEVELS)})
    else:
        grid = list(base)
    value = stencils.stencil(grid, q)
    extended = list(grid)
    while stencils.stencil(extended, q).accuracy <= value.accuracy:
        extended.append(_next_offset(method, extended))
    offsets = sorted(extended)

    def on_offsets(st: stencils.Stencil) -> np.ndarray:
        w = dict(zip(st.offsets, st.weights))
        return np.array([float(w.get(s, 0)) for s in offsets])

    p, c = value.leading_error
    return Scheme(
        q=q,
        offsets=np.array(offsets, dtype=np.float64),
        in_value=np.isin(offsets, grid),
        value=on_offsets(value),
        check=on_offsets(stencils.stencil(extended, q)),
        slope=on_offsets(stencils.stencil(grid, 1)),
        order=p,
        constant=float(c),
    )


def _next_offset(method: str, grid: list[int]) -> int:
    """Outward extension: forward grows up, backward down, central alternates (up first)."""
    hi, lo = max(grid), min(grid)
    if method == "forward" or (method == "central" and hi <= -lo):
        return hi + 1
    return lo - 1


def plan_evaluations(kind: str, n: int, opts: FDOptions, ncolors: int | None = None) -> int:
    """Upper bound on the distinct points of f a request evaluates, before running it."""
    if kind not in KINDS:
        raise ValueError(f"unknown finite-difference kind {kind!r}; expected one of {KINDS}")
    q = 2 if kind in ("hessian", "hvp") else 1
    lines = {
        "jacobian": n if ncolors is None else ncolors,
        "gradient": n,
        "jvp": 1,
        "hessian": n * (n + 1) // 2,
        "hvp": 2 * n,
    }[kind]
    rounds = 1 if opts.step is not None else 2
    return 1 + rounds * lines * scheme(opts.method, opts.order, opts.extrapolation, q).points


class _Sampler:
    """f on batches of points around x: one call per batch, each distinct point evaluated once."""

    def __init__(self, f: BatchFunction, x: np.ndarray, scalar: bool):
        self.f = f
        self.x = x
        self.scalar = scalar
        self.m: int | None = None
        self.known: dict[bytes, np.ndarray] = {}

    @property
    def evaluations(self) -> int:
        return len(self.known)

    @property
    def centre(self) -> np.ndarray:
        """f(x), (m,); evaluated alone only if no batch has carried it yet."""
        return self(self.x[None, :])[0]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, self.x.size)
        if not np.all(np.isfinite(points)):
            raise ValidationFailed("a finite-difference step overflows: x + step is not finite; give a smaller fd.step")
        unique, inverse = np.unique(points, axis=0, return_inverse=True)
        keys = [row.tobytes() for row in unique]
        new = [i for i, key in enumerate(keys) if key not in self.known]
        if new:
            values = self._call(unique[new])
            self.known.update((keys[i], y) for i, y in zip(new, values))
        return np.stack([self.known[key] for key in keys])[inverse.reshape(-1)]

    def _call(self, points: np.ndarray) -> np.ndarray:
        values = np.asarray(self.f(points), dtype=np.float64)
        if values.ndim == 1 and values.shape[0] == len(points):
            values = values[:, None]
        m = self.m if self.m is not None else (1 if self.scalar else None)
        if values.ndim != 2 or values.shape[0] != len(points) or (m is not None and values.shape[1] != m):
            expected = [len(points), "m" if m is None else m]
            raise ShapeError(
                f"f returned shape {list(values.shape)} for {len(points)} points; expected {expected}"
                + (" (a scalar function)" if self.scalar else ""),
                expected=expected,
                got=list(values.shape),
            )
        self.m = values.shape[1]
        bad = ~np.all(np.isfinite(values), axis=1)
        if bad.any():
            at = points[np.argmax(bad)]
            raise ValidationFailed(
                "f is not finite at a finite-difference point; the function may be undefined within a step "
                "of x (try fd.method 'forward' or 'backward', or a smaller fd.step)",
                point=at.tolist() if at.size <= 16 else None,
            )
        return values


@dataclass
class _Lines:
    """K lines t -> x + t·d_k; direction d_k moves coordinates ``coord[e]`` by ``step[e]`` where ``line[e] == k``."""

    line: np.ndarray
    coord: np.ndarray
    step: np.ndarray
    count: int

    def scaled(self, keep: np.ndarray, factor: np.ndarray) -> _Lines:
        """The lines ``keep`` (renumbered 0..), each direction multiplied by factor[k]."""
        renumber = np.full(self.count, -1)
        renumber[keep] = np.arange(len(keep))
        sel = renumber[self.line] >= 0
        return _Lines(renumber[self.line[sel]], self.coord[sel], self.step[sel] * factor[self.line[sel]], len(keep))


def _dense_lines(directions: np.ndarray) -> _Lines:
    """Lines from a (K, n) matrix of directions."""
    line, coord = np.nonzero(directions)
    return _Lines(line, coord, directions[line, coord], directions.shape[0])


def _probe(sampler: _Sampler, lines: _Lines, sch: Scheme):
    """g_k(s_j) - f(x) for every line and offset, (K, N, m); max |g_k| on the value grid, (K, m);
    and the actual offsets per component, (nnz, N).

    Stencils are applied to differences from f(x): their weights sum to zero only up to rounding,
    and Σ w_j f(x) / h^q would otherwise add eps·|f|/h^q to every derivative. The batch carries
    x itself too, so f(x) costs no call of its own.
    """
    x = sampler.x
    nonzero = sch.offsets != 0
    offs = sch.offsets[nonzero]
    moved = x[lines.coord][:, None] + offs[None, :] * lines.step[:, None]
    points = np.broadcast_to(x, (lines.count, len(offs), x.size)).copy()
    points[lines.line[:, None], np.arange(len(offs))[None, :], lines.coord[:, None]] = moved
    values = sampler(np.vstack([points.reshape(-1, x.size), x[None, :]]))
    g = np.empty((lines.count, len(sch.offsets), values.shape[1]))
    g[:, nonzero] = values[:-1].reshape(lines.count, len(offs), -1)
    g[:, ~nonzero] = values[-1]
    fmax = np.max(np.abs(g[:, sch.in_value, :]), axis=1)
    actual = np.zeros((len(lines.line), len(sch.offsets)))
    actual[:, nonzero] = (moved - x[lines.coord][:, None]) / lines.step[:, None]
    if np.any(np.diff(actual, axis=1) <= 0):
        raise ValidationFailed("fd.step is too small for x: x + step rounds back to x", field="fd.step")
    return g - values[-1], fmax, actual


def _line_weights(sch: Scheme, lines: _Lines, actual: np.ndarray):
    """Per-line weights: measured offsets for single-coordinate lines, nominal otherwise.

    The coordinates of one line may round differently, so no single set of
    offsets describes it; with power-of-two steps they rarely round at all, and
    when they do, the displacement error is an input rounding, which the noise
    model's |x_k ∂_k f| term covers.
    """
    per_line = np.tile(sch.offsets, (lines.count, 1))
    components = np.bincount(lines.line, minlength=lines.count)
    single = components[lines.line] == 1
    per_line[lines.line[single]] = actual[single]
    return sch.weights(per_line)


def _noise_seen(observed: np.ndarray, model: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Noise of f per group (output), as the differences check - value show it, (groups,).

    ``observed`` is |check - value| / ‖check - value weights‖₂, in units of f: the noise σ times
    |N(0, 1)| where rounding dominates, more where truncation does. Over the lines of a group whose
    observation is within NOISE_LIKE of the model, the lower quartile over 0.3186 (the lower quartile
    of |N(0, 1)|) estimates σ; the quartile rather than the median keeps lines still dominated by
    truncation from inflating it. It catches noise the model misses, chiefly a sum whose terms cancel,
    |f| ≪ Σ|terms|. Zero where a group has too few lines.
    """
    usable = observed <= NOISE_LIKE * model
    grp, obs = group[usable], observed[usable]
    order = np.lexsort((obs, grp))
    grp, obs = grp[order], obs[order]
    counts = np.bincount(grp, minlength=groups)
    starts = np.cumsum(counts) - counts
    seen = np.zeros(groups)
    ok = counts >= POOL_MIN_LINES
    seen[ok] = obs[starts[ok] + (counts[ok] - 1) // 4] / 0.3186
    return seen


def _shrink(trunc: np.ndarray, noise: np.ndarray, sch: Scheme) -> np.ndarray:
    """Step factor (power of two, ≤ 1) balancing measured truncation and rounding; 1 where not worth a round."""
    p, q = sch.order, sch.q
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = trunc / np.maximum(noise, np.finfo(np.float64).tiny)
        lam = np.clip((q / (p * ratio)) ** (1.0 / (p + q)), MAX_SHRINK, 1.0)
        gain = (trunc + noise) / (noise * lam**-q + trunc * lam**p)
    lam = 2.0 ** np.round(np.log2(lam))
    return np.where((gain >= REFINE_GAIN) & (lam < 1.0), lam, 1.0)


def _point(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ShapeError(f"x must be a non-empty flat vector, got shape {list(x.shape)}", got=list(x.shape))
    if not np.all(np.isfinite(x)):
        raise ValidationFailed("x must be finite for finite differences")
    return x


def _direction(x: np.ndarray, v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.shape != x.shape:
        raise ShapeError(f"v has shape {list(v.shape)}, x has {list(x.shape)}", expected=list(x.shape), got=list(v.shape))
    if not np.all(np.isfinite(v)):
        raise ValidationFailed("v must be finite")
    return v


def require_budget(what: str, planned: int, budget: int) -> None:
    """Refuse ``planned`` evaluations of f over ``budget`` (``fd_max_evaluations``), naming ``what``."""
    if planned > budget:
        raise LimitExceeded(
            f"finite-difference {what} needs up to {planned} evaluations of f, "
            f"over the limit fd_max_evaluations = {budget}",
            limit="fd_max_evaluations",
            value=planned,
            max=budget,
        )


def _start(f: BatchFunction, x: np.ndarray, kind: str, opts: FDOptions, budget: int, ncolors: int | None = None):
    """Refuse an over-budget request before anything is evaluated; the sampler for the rest."""
    require_budget(kind, plan_evaluations(kind, x.size, opts, ncolors), budget)
    return _Sampler(f, x, scalar=kind in ("gradient", "hessian", "hvp"))


def _pow2(h):
    return 2.0 ** np.round(np.log2(h))


def _coordinate_steps(x: np.ndarray, sch: Scheme, opts: FDOptions) -> np.ndarray:
    """Per-coordinate steps: the given one, or the balance for the scale max(|x_i|, 1) as a power of two."""
    if opts.step is not None:
        return np.full(x.size, float(opts.step))
    return _pow2(sch.balance * np.maximum(np.abs(x), 1.0))


def _direction_step(x: np.ndarray, v: np.ndarray, sch: Scheme, opts: FDOptions) -> float:
    """t with max_k |t v_k| the balanced step h_0 for the scale L_v = max_k |v_k| max(|x_k|, 1) / max|v|."""
    vmax = float(np.max(np.abs(v)))
    if opts.step is not None:
        return float(opts.step) / vmax
    scale = float(np.max(np.abs(v) * np.maximum(np.abs(x), 1.0))) / vmax
    return float(_pow2(sch.balance * scale / vmax))


def _moved_noise(x: np.ndarray, lines: _Lines, grad: np.ndarray) -> np.ndarray:
    """eps·‖x_k ∂_k f‖₂ over the coordinates each line moves, (K, 1), for scalar f with gradient ``grad``."""
    reach = np.bincount(lines.line, weights=(x[lines.coord] * grad[lines.coord]) ** 2, minlength=lines.count)
    return EPS * np.sqrt(reach)[:, None]


# ---------------------------------------------------------------- Jacobian


def _check_coloring(rows: np.ndarray, cols: np.ndarray, colors: np.ndarray, n: int) -> None:
    if colors.shape != (n,) or (colors < 0).any():
        raise ValidationFailed(f"colors must give a non-negative colour to each of the {n} columns")
    row_colour = np.unique(np.stack([rows, colors[cols]], axis=1), axis=0)
    if len(row_colour) != len(rows):
        raise ValidationFailed("colors is not a valid colouring of the pattern: two columns of one colour share a row")


def jacobian(
    f: BatchFunction,
    x,
    opts: FDOptions,
    *,
    budget: int,
    colors: np.ndarray | None = None,
    pattern: tuple[np.ndarray, np.ndarray] | None = None,
) -> FDResult:
    """J[r, i] = ∂f_r/∂x_i, (m, n); with a pattern (COO rows, cols), columns of one colour share
    evaluations and entries outside the pattern are 0 (colours computed if not given)."""
    x = _point(x)
    n = x.size
    ncolors = None
    if pattern is None:
        if colors is not None:
            raise ValidationFailed("colors need the sparsity pattern to decompress the Jacobian")
    else:
        rows, cols = (np.asarray(a, dtype=np.int64).ravel() for a in pattern)
        if rows.shape != cols.shape:
            raise ShapeError("pattern rows and cols must have one length")
        if rows.size and (rows.min() < 0 or cols.min() < 0 or cols.max() >= n):
            raise ValidationFailed(f"sparsity pattern has an entry outside the {n} columns")
        rows, cols = np.unique(np.stack([rows, cols], axis=1), axis=0).T.reshape(2, -1)
        if colors is None:
            colors = color_columns(rows, cols, (int(rows.max()) + 1 if rows.size else 0, n))
        colors = np.asarray(colors, dtype=np.int64)
        _check_coloring(rows, cols, colors, n)
        ncolors = int(colors.max()) + 1
        pattern = (rows, cols)
    sampler = _start(f, x, "jacobian", opts, budget, ncolors)
    jac, err = _first_derivatives(sampler, opts, pattern, np.arange(n) if colors is None else colors)
    return FDResult(value=sampler.centre, derivative=jac, error=err, evaluations=sampler.evaluations)


def gradient(f: BatchFunction, x, opts: FDOptions, *, budget: int) -> FDResult:
    """∇f for scalar f, (n,)."""
    x = _point(x)
    sampler = _start(f, x, "gradient", opts, budget)
    jac, err = _first_derivatives(sampler, opts, None, np.arange(x.size))
    return FDResult(value=sampler.centre, derivative=jac[0], error=err[0], evaluations=sampler.evaluations)


def _first_derivatives(sampler: _Sampler, opts: FDOptions, pattern, colors) -> tuple[np.ndarray, np.ndarray]:
    """J (m, n) and its errors: the pattern's entries (all without one), columns of one colour probed together.

    Entry (r, i) reads row r from the line of column i's colour, with column i's
    step and the weights of its measured offsets. Its rounding uses the noise
    model eps·hypot(max|f_r|, x_i ∂_i f_r), raised to the noise the check
    differences of row r show across columns where that is larger.
    """
    x = sampler.x
    n = x.size
    sch = scheme(opts.method, opts.order, opts.extrapolation, 1)
    steps = _coordinate_steps(x, sch, opts)
    probed = np.arange(n) if pattern is None else np.unique(pattern[1])
    if not probed.size:
        m = sampler.centre.size
        return np.zeros((m, n)), np.zeros((m, n))

    def probe(columns: np.ndarray):
        groups, line_of = np.unique(colors[columns], return_inverse=True)
        return (columns, line_of, *_probe(sampler, _Lines(line_of, columns, steps[columns], len(groups)), sch))

    first = probe(probed)
    m = first[2].shape[2]
    if pattern is None:
        rows, cols = np.repeat(np.arange(m), n), np.tile(np.arange(n), m)
    else:
        rows, cols = pattern
        if rows.max() >= m:
            raise ValidationFailed(f"sparsity pattern has row {int(rows.max())} but f has {m} outputs")
    est, delta, fmax, wnorm, cnorm = (np.zeros(rows.size) for _ in range(5))

    def fill(columns, line_of, g, gmax, actual) -> None:
        """The entries of ``columns`` from their probe."""
        value, check, _ = sch.weights(actual)
        slot = np.full(n, -1)
        slot[columns] = np.arange(columns.size)
        sel = np.flatnonzero(slot[cols] >= 0)
        e = slot[cols[sel]]
        samples = g[line_of[e], :, rows[sel]]  # row r from the line of column i's colour: (entries, N)
        h = steps[cols[sel]]
        est[sel] = np.einsum("en,en->e", value[e], samples) / h
        delta[sel] = np.einsum("en,en->e", check[e] - value[e], samples) / h
        fmax[sel] = gmax[line_of[e], rows[sel]]
        wnorm[sel] = np.linalg.norm(value[e], axis=1)
        cnorm[sel] = np.linalg.norm(check[e] - value[e], axis=1)

    def noise() -> np.ndarray:
        model = EPS * np.hypot(fmax, x[cols] * est)
        seen = _noise_seen(np.abs(delta) * steps[cols] / cnorm, model, rows, m)
        return wnorm * np.maximum(model, seen[rows]) / steps[cols]

    fill(*first)
    if opts.step is None:
        # the entry of a column asking for the smallest step decides
        lam = np.ones(n)
        np.minimum.at(lam, cols, _shrink(np.abs(delta), noise(), sch))
        again = np.flatnonzero(lam < 1.0)
        if again.size:
            steps[again] *= lam[again]
            fill(*probe(again))
    jac = np.zeros((m, n))
    err = np.zeros((m, n))
    jac[rows, cols] = est
    err[rows, cols] = np.hypot(delta, noise())
    return jac, err


# ---------------------------------------------------------------- lines: JVP, Hessian, HVP


def _line_derivatives(sampler: _Sampler, lines: _Lines, sch: Scheme, opts: FDOptions, input_noise):
    """Per line k and output, in units of the given directions: g_k^(q)(0), the signed truncation
    estimate (check - value), the rounding estimate, and g_k'(0).

    Truncation estimates are returned signed because they combine linearly when lines are combined
    (a Hessian entry, an HVP component), where they partly cancel; rounding errors of different lines
    are independent and combine in quadrature. ``input_noise(slope)`` maps the first derivatives of all
    lines to eps·‖x_k ∂_k f‖ over the coordinates each line moves, (K, m). Lines whose measured
    truncation calls for a smaller step are probed once more with the direction scaled by λ, and their
    results brought back to the given units by λ^-q (λ^-1 for the slope).
    """

    def run(sub: _Lines):
        g, gmax, actual = _probe(sampler, sub, sch)
        value, check, slope = _line_weights(sch, sub, actual)
        return (
            np.einsum("kn,knm->km", value, g),
            np.einsum("kn,knm->km", check - value, g),
            gmax,
            np.linalg.norm(value, axis=1)[:, None],
            np.einsum("kn,knm->km", slope, g),
        )

    est, delta, fmax, wnorm, slope = run(lines)

    def noise():
        return wnorm * np.hypot(EPS * fmax, input_noise(slope))

    if opts.step is None:
        lam = np.min(_shrink(np.abs(delta), noise(), sch), axis=1)
        again = np.flatnonzero(lam < 1.0)
        if again.size:
            scale = lam[again][:, None]
            e2, d2, f2, w2, s2 = run(lines.scaled(again, lam))
            est[again], delta[again], slope[again] = e2 / scale**sch.q, d2 / scale**sch.q, s2 / scale
            fmax[again], wnorm[again] = f2, w2 / scale**sch.q
    return est, delta, noise(), slope


def jvp(f: BatchFunction, x, v, opts: FDOptions, *, budget: int) -> FDResult:
    """J·v = d/dt f(x + t v) at 0, (m,): one line, the step scaled to the coordinates v moves."""
    x = _point(x)
    v = _direction(x, v)
    sampler = _start(f, x, "jvp", opts, budget)
    if not v.any():
        y0 = sampler.centre
        return FDResult(y0, np.zeros(y0.size), np.zeros(y0.size), sampler.evaluations)
    sch = scheme(opts.method, opts.order, opts.extrapolation, 1)
    t = _direction_step(x, v, sch, opts)
    vmax = float(np.max(np.abs(v)))
    # ‖x_k ∂_k f‖ over the moved coordinates is not observable along one line;
    # max_k |x_k v_k| |Jv| / max|v|² stands in (exact for v = e_i)
    reach = float(np.max(np.abs(x * v))) / vmax**2 / t
    est, delta, noise, _ = _line_derivatives(
        sampler, _dense_lines((t * v)[None, :]), sch, opts, lambda slope: EPS * reach * np.abs(slope)
    )
    return FDResult(
        value=sampler.centre,
        derivative=est[0] / t,
        error=np.hypot(delta[0], noise[0]) / t,
        evaluations=sampler.evaluations,
    )


def hessian(f: BatchFunction, x, opts: FDOptions, *, budget: int) -> FDResult:
    """∇²f for scalar f, (n, n), symmetric: diagonal lines a_i e_i, one line a_i e_i + a_j e_j per pair."""
    x = _point(x)
    sampler = _start(f, x, "hessian", opts, budget)
    n = x.size
    sch = scheme(opts.method, opts.order, opts.extrapolation, 2)
    a = _coordinate_steps(x, sch, opts)
    i, j = np.triu_indices(n, k=1)
    pair = n + np.arange(i.size)
    lines = _Lines(
        line=np.concatenate([np.arange(n), pair, pair]),
        coord=np.concatenate([np.arange(n), i, j]),
        step=np.concatenate([a, a[i], a[j]]),
        count=n + i.size,
    )
    est, delta, noise, _ = _line_derivatives(
        sampler, lines, sch, opts, lambda slope: _moved_noise(x, lines, slope[:n, 0] / a)
    )
    est, delta, noise = est[:, 0], delta[:, 0], noise[:, 0]
    hess = np.diag(est[:n] / a**2)
    errs = np.diag(np.hypot(delta[:n], noise[:n]) / a**2)
    # d^T H d = a_i² H_ii + 2 a_i a_j H_ij + a_j² H_jj along d = a_i e_i + a_j e_j
    scale = 2 * a[i] * a[j]
    trunc = delta[n:] - delta[i] - delta[j]
    rounding = np.sqrt(noise[n:] ** 2 + noise[i] ** 2 + noise[j] ** 2)
    hess[i, j] = hess[j, i] = (est[n:] - est[i] - est[j]) / scale
    errs[i, j] = errs[j, i] = np.hypot(trunc, rounding) / scale
    return FDResult(value=sampler.centre, derivative=hess, error=errs, evaluations=sampler.evaluations)


def hvp(f: BatchFunction, x, v, opts: FDOptions, *, budget: int) -> FDResult:
    """(∇²f) v for scalar f, (n,): (Hv)_i = (d+^T H d+ - d-^T H d-) / (4 a_i b) along d± = a_i e_i ± b v."""
    x = _point(x)
    v = _direction(x, v)
    sampler = _start(f, x, "hvp", opts, budget)
    n = x.size
    if not v.any():
        return FDResult(sampler.centre, np.zeros(n), np.zeros(n), sampler.evaluations)
    sch = scheme(opts.method, opts.order, opts.extrapolation, 2)
    a = _coordinate_steps(x, sch, opts)
    b = _direction_step(x, v, sch, opts)
    lines = _dense_lines(np.vstack([np.diag(a) + b * v, np.diag(a) - b * v]))

    def input_noise(slope):
        # g±'(0) = a_i ∂_i f ± b v·∇f, so the sum isolates ∂_i f
        return _moved_noise(x, lines, (slope[:n, 0] + slope[n:, 0]) / (2 * a))

    est, delta, noise, _ = _line_derivatives(sampler, lines, sch, opts, input_noise)
    scale = 4 * a * b
    trunc = delta[:n, 0] - delta[n:, 0]
    rounding = np.hypot(noise[:n, 0], noise[n:, 0])
    return FDResult(
        value=sampler.centre,
        derivative=(est[:n, 0] - est[n:, 0]) / scale,
        error=np.hypot(trunc, rounding) / scale,
        evaluations=sampler.evaluations,
    )
