"""The finite-difference engine against analytic derivatives: accuracy, honest errors, budgets, sparsity."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd.engines import finite, stencils
from derivd.engines.coloring import color_columns
from derivd.engines.finite import FDOptions, gradient, hessian, hvp, jacobian, jvp, plan_evaluations
from derivd.errors import LimitExceeded, ShapeError, ValidationFailed
from tests.references import rosenbrock_gradient, rosenbrock_hessian

PLAIN = FDOptions()
HIGH = FDOptions(method="central", order=6)  # the high-accuracy setting the module documents


def scalar(fn):
    """A batched f: (p, 1) -> (p, 1) from an elementwise numpy function."""
    return lambda X: fn(X[:, :1])


def squire_trapp(x):
    return np.exp(x) / np.sqrt(np.sin(x) ** 3 + np.cos(x) ** 3)


def squire_trapp_d(x):
    s, c = np.sin(x), np.cos(x)
    return squire_trapp(x) * (1 - (3 * s * s * c - 3 * c * c * s) / (2 * (s**3 + c**3)))


def rosenbrock(X):
    return np.sum(100 * (X[:, 1:] - X[:, :-1] ** 2) ** 2 + (1 - X[:, :-1]) ** 2, axis=1, keepdims=True)


SMOOTH = [
    ("exp", np.exp, np.exp, 1.0),
    ("sin", np.sin, np.cos, 0.5),
    ("sin", np.sin, np.cos, 1.0),
    ("sin", np.sin, np.cos, 2.0),
    ("squire-trapp", squire_trapp, squire_trapp_d, 1.5),
]
ROSENBROCK_START = np.tile([-1.2, 1.0], 10)


class Counting:
    """A batched f that records every batch it is given."""

    def __init__(self, f):
        self.f = f
        self.batches: list[np.ndarray] = []

    def __call__(self, X):
        self.batches.append(np.array(X))
        return self.f(X)

    @property
    def rows(self) -> np.ndarray:
        return np.vstack(self.batches) if self.batches else np.zeros((0, 0))


# ---------------------------------------------------------------- accuracy (issue 5)


@pytest.mark.parametrize("opts, tolerance, per_coordinate", [(PLAIN, 1e-9, 6), (HIGH, 1e-12, 14)])
@pytest.mark.parametrize("name, fn, dfn, x", SMOOTH, ids=[f"{c[0]}@{c[3]}" for c in SMOOTH])
def test_first_derivative_accuracy(name, fn, dfn, x, opts, tolerance, per_coordinate):
    result = gradient(scalar(fn), [x], opts, budget=100)
    error = abs(result.derivative[0] - dfn(x))
    assert error <= tolerance * abs(dfn(x))
    assert result.evaluations <= 1 + per_coordinate
    assert result.error[0] >= 0.5 * error
    assert result.value[0] == fn(x)


@pytest.mark.parametrize("opts, tolerance, per_coordinate", [(PLAIN, 1e-9, 6), (HIGH, 1e-12, 14)])
@pytest.mark.parametrize("x", [ROSENBROCK_START, np.random.default_rng(5).uniform(-2, 2, 20)], ids=["start", "random"])
def test_extended_rosenbrock_gradient(x, opts, tolerance, per_coordinate):
    result = gradient(rosenbrock, x, opts, budget=10_000)
    truth = rosenbrock_gradient(x)
    error = np.abs(result.derivative - truth)
    assert error.max() <= tolerance * np.abs(truth).max()
    assert result.evaluations <= 1 + per_coordinate * x.size
    assert np.all(result.error >= 0.5 * error)


def test_error_estimate_is_honest_and_within_10x():
    """E is never far below the true error and typically within a few times it.

    Where rounding dominates, the error is a random variable and E its scale (eps|f| per evaluation,
    about 4x the rounding of a correctly rounded function), so in up to a third of the cases the
    error happens to be more than 10x smaller than E; the median stays within 10x.
    """
    rng = np.random.default_rng(0)
    functions = [
        (np.exp, np.exp, (-4, 4)),
        (np.sin, np.cos, (-6, 6)),
        (np.log, lambda x: 1 / x, (0.2, 20)),
        (np.arctan, lambda x: 1 / (1 + x * x), (-3, 3)),
        (squire_trapp, squire_trapp_d, (1.0, 1.8)),
        (lambda x: np.sin(3 * x), lambda x: 3 * np.cos(3 * x), (-2, 2)),
    ]
    for opts in [PLAIN, HIGH, FDOptions(method="forward", order=1), FDOptions(extrapolation=True)]:
        ratios = []
        for fn, dfn, (lo, hi) in functions:
            for x in rng.uniform(lo, hi, 12):
                result = gradient(scalar(fn), [x], opts, budget=100)
                truth = dfn(x)
                error = max(abs(result.derivative[0] - truth), 0.5 * np.spacing(abs(truth)))
                ratios.append(result.error[0] / error)
        ratios = np.array(ratios)
        assert ratios.min() >= 0.4, opts
        assert np.median(ratios) <= 6, opts
        assert np.mean(ratios > 10) <= 0.4, opts


@pytest.mark.parametrize("fn, dfn, x", [(np.exp, np.exp, 1.0), (np.sin, np.cos, 0.7), (squire_trapp, squire_trapp_d, 1.5)])
@pytest.mark.parametrize("opts", [FDOptions(step=2.0**-8), FDOptions(method="backward", order=2, step=2.0**-8)])
def test_truncation_estimate_tracks_the_true_error_at_a_given_step(fn, dfn, x, opts):
    result = gradient(scalar(fn), [x], opts, budget=100)
    error = abs(result.derivative[0] - dfn(x))
    assert 0.5 <= result.error[0] / error <= 2


def test_richardson_is_the_tableau_over_h_2h_4h():
    """extrapolation=True equals Richardson's tableau of central differences at h, 2h, 4h (exact weights)."""
    h = 2.0**-5
    x = 0.3
    d = [(np.exp(x + k * h) - np.exp(x - k * h)) / (2 * k * h) for k in (1, 2, 4)]
    # error in h^2, h^4: eliminate with ratios 4 (h^2) then 16 (h^4), finest step first
    r1 = [(4 * d[0] - d[1]) / 3, (4 * d[1] - d[2]) / 3]
    tableau = (16 * r1[0] - r1[1]) / 15
    result = gradient(scalar(np.exp), [x], FDOptions(step=h, extrapolation=True), budget=100)
    assert result.derivative[0] == pytest.approx(tableau, rel=1e-13)

    weights = {s: Fraction(0) for s in (-4, -2, -1, 1, 2, 4)}
    for k, c in zip((1, 2, 4), (Fraction(64, 45), Fraction(-20, 45), Fraction(1, 45))):
        weights[k] += c / (2 * k)
        weights[-k] -= c / (2 * k)
    union = stencils.stencil(sorted(weights), 1)
    assert dict(zip(union.offsets, union.weights)) == weights


def test_measured_offsets_when_x_plus_h_crosses_a_power_of_two():
    """x just below 1: x + h rounds in the next binade; the stencil uses the displacement actually applied."""
    x = np.nextafter(1.0, 0.0)
    result = gradient(lambda X: X[:, :1].copy(), [x], FDOptions(step=2.0**-30), budget=100)
    assert result.derivative[0] == pytest.approx(1.0, abs=1e-15)


# ---------------------------------------------------------------- JVP, Hessian, HVP


def vector_function(X):
    x0, x1, x2 = X[:, 0], X[:, 1], X[:, 2]
    return np.stack([np.exp(x0) * np.sin(x1), x0 * x2**2 + np.cos(x1 * x2), np.log1p(x0**2) * x1], axis=1)


def vector_jacobian(x):
    x0, x1, x2 = x
    return np.array(
        [
            [np.exp(x0) * np.sin(x1), np.exp(x0) * np.cos(x1), 0.0],
            [x2**2, -x2 * np.sin(x1 * x2), 2 * x0 * x2 - x1 * np.sin(x1 * x2)],
            [2 * x0 / (1 + x0**2) * x1, np.log1p(x0**2), 0.0],
        ]
    )


def smooth_scalar(X):
    x0, x1, x2 = X[:, 0], X[:, 1], X[:, 2]
    return (np.exp(x0) * np.sin(x1) + x0 * x2**2 + np.cos(x1 * x2))[:, None]


def smooth_scalar_hessian(x):
    x0, x1, x2 = x
    c, s = np.cos(x1 * x2), np.sin(x1 * x2)
    return np.array(
        [
            [np.exp(x0) * np.sin(x1), np.exp(x0) * np.cos(x1), 2 * x2],
            [np.exp(x0) * np.cos(x1), -np.exp(x0) * np.sin(x1) - x2**2 * c, -s - x1 * x2 * c],
            [2 * x2, -s - x1 * x2 * c, 2 * x0 - x1**2 * c],
        ]
    )


X3 = np.array([0.4, -0.9, 1.3])


@pytest.mark.parametrize("opts, tolerance", [(PLAIN, 1e-9), (HIGH, 1e-12)])
def test_jacobian_and_jvp(opts, tolerance):
    truth = vector_jacobian(X3)
    result = jacobian(vector_function, X3, opts, budget=1000)
    error = np.abs(result.derivative - truth)
    assert error.max() <= tolerance * np.abs(truth).max()
    assert np.all(result.error >= 0.5 * error)
    v = np.array([0.3, -1.1, 0.6])
    along = jvp(vector_function, X3, v, opts, budget=1000)
    error = np.abs(along.derivative - truth @ v)
    assert error.max() <= tolerance * np.abs(truth @ v).max()
    assert np.all(along.error >= 0.5 * error)
    assert along.evaluations <= plan_evaluations("jvp", 3, opts)


@pytest.mark.parametrize("opts, tolerance", [(PLAIN, 1e-7), (FDOptions(order=4), 1e-10)])
def test_hessian_symmetric_and_accurate(opts, tolerance):
    for f, x, truth in [
        (smooth_scalar, X3, smooth_scalar_hessian(X3)),
        (rosenbrock, ROSENBROCK_START[:6], rosenbrock_hessian(ROSENBROCK_START[:6])),
    ]:
        result = hessian(f, x, opts, budget=10_000)
        assert np.array_equal(result.derivative, result.derivative.T)
        assert np.array_equal(result.error, result.error.T)
        error = np.abs(result.derivative - truth)
        assert error.max() <= tolerance * np.abs(truth).max()
        assert np.all(result.error >= 0.5 * error)


@pytest.mark.parametrize("opts, tolerance", [(PLAIN, 1e-7), (FDOptions(order=4), 1e-10)])
def test_hvp(opts, tolerance):
    rng = np.random.default_rng(2)
    for f, x, truth in [
        (smooth_scalar, X3, smooth_scalar_hessian(X3)),
        (rosenbrock, ROSENBROCK_START[:8], rosenbrock_hessian(ROSENBROCK_START[:8])),
    ]:
        v = rng.normal(size=x.size)
        result = hvp(f, x, v, opts, budget=10_000)
        error = np.abs(result.derivative - truth @ v)
        assert error.max() <= tolerance * np.abs(truth @ v).max()
        assert np.all(result.error >= 0.5 * error)


def test_zero_direction_costs_one_evaluation():
    for fn in (jvp, hvp):
        result = fn(smooth_scalar, X3, np.zeros(3), PLAIN, budget=100)
        assert result.evaluations == 1
        assert not result.derivative.any() and not result.error.any()


# ---------------------------------------------------------------- budget, batching, dedupe


def call_kind(kind, f, x, opts, budget):
    v = np.linspace(0.5, -0.5, x.size)
    return {
        "jacobian": lambda: jacobian(f, x, opts, budget=budget),
        "gradient": lambda: gradient(f, x, opts, budget=budget),
        "jvp": lambda: jvp(f, x, v, opts, budget=budget),
        "hessian": lambda: hessian(f, x, opts, budget=budget),
        "hvp": lambda: hvp(f, x, v, opts, budget=budget),
    }[kind]()


@pytest.mark.parametrize("kind", finite.KINDS)
def test_budget_refused_before_any_evaluation(kind):
    f = Counting(smooth_scalar)
    planned = plan_evaluations(kind, 3, PLAIN)
    with pytest.raises(LimitExceeded) as refused:
        call_kind(kind, f, X3, PLAIN, planned - 1)
    assert f.batches == []
    assert refused.value.status == 413
    assert refused.value.detail == {"limit": "fd_max_evaluations", "value": planned, "max": planned - 1}
    assert "fd_max_evaluations" in refused.value.message and str(planned) in refused.value.message
    assert call_kind(kind, f, X3, PLAIN, planned).evaluations <= planned


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(finite.KINDS),
    family=st.one_of(
        st.tuples(st.just("central"), st.sampled_from([2, 4, 6])),
        st.tuples(st.sampled_from(["forward", "backward"]), st.integers(1, 3)),
    ),
    extrapolation=st.booleans(),
    step=st.sampled_from([None, None, 2.0**-10]),
    rate=st.floats(0.1, 40),
    n=st.integers(1, 4),
)
def test_plan_bounds_evaluations_and_each_point_is_evaluated_once(kind, family, extrapolation, step, rate, n):
    """Steep exp(rate·x) forces step refinement; the plan must still bound what is spent."""
    opts = FDOptions(method=family[0], order=family[1], step=step, extrapolation=extrapolation)
    f = Counting(lambda X: np.exp(rate * X).sum(axis=1, keepdims=True) / np.exp(rate))
    x = np.linspace(0.2, 0.8, n)
    result = call_kind(kind, f, x, opts, 10**6)
    rows = f.rows
    assert result.evaluations == len(rows) == len(np.unique(rows, axis=0))
    assert result.evaluations <= plan_evaluations(kind, n, opts)
    assert len(f.batches) <= (1 if step is not None else 2)


def test_one_call_per_round():
    f = Counting(scalar(np.exp))
    gradient(f, [1.0], PLAIN, budget=100)
    assert len(f.batches) == 1  # f(x) travels with the stencil points
    f = Counting(scalar(squire_trapp))
    gradient(f, [1.5], PLAIN, budget=100)
    assert len(f.batches) == 2  # the step is refined once


def test_identical_points_are_evaluated_once():
    """hvp along e_0 with a = b: the line a e_0 - b e_0 collapses onto x and costs nothing."""
    a = np.array([[3.0, 1.0, 0.5], [1.0, 2.0, -1.0], [0.5, -1.0, 4.0]])
    f = Counting(lambda X: 0.5 * np.einsum("pi,ij,pj->p", X, a, X)[:, None])
    result = hvp(f, X3, np.array([1.0, 0.0, 0.0]), PLAIN, budget=1000)
    points = finite.scheme("central", 2, False, 2).points
    assert result.evaluations == 1 + points * (2 * X3.size - 1) == len(f.rows)
    assert result.derivative == pytest.approx(a[:, 0], rel=1e-7)


# ---------------------------------------------------------------- sparse Jacobians


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_coloring_is_a_valid_distance_1_coloring(m, n, data):
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=m * n, max_size=m * n))).reshape(m, n)
    rows, cols = np.nonzero(mask)
    colors = color_columns(rows, cols, (m, n))
    assert colors.shape == (n,) and colors.min() >= 0
    for r in range(m):
        in_row = colors[mask[r]]
        assert len(set(in_row.tolist())) == in_row.size
    shares_a_row = (mask.T.astype(int) @ mask.astype(int)) > 0
    np.fill_diagonal(shares_a_row, False)
    assert colors.max() + 1 <= shares_a_row.sum(axis=1).max() + 1  # greedy: at most max degree + 1


def banded(X):
    """y_i = sin(x_{i-1} x_i) + x_{i+1}² exp(x_i): tridiagonal."""
    Xp = np.pad(X, ((0, 0), (1, 1)))
    return np.sin(Xp[:, :-2] * Xp[:, 1:-1]) + Xp[:, 2:] ** 2 * np.exp(Xp[:, 1:-1])


def tridiagonal(n):
    rows = np.concatenate([np.arange(n), np.arange(1, n), np.arange(n - 1)])
    cols = np.concatenate([np.arange(n), np.arange(n - 1), np.arange(1, n)])
    return rows, cols


def block_diagonal(X, size=4):
    """Blocks of 4 inputs -> 2 outputs: (prod, sum of squares · cos(first))."""
    B = X.reshape(len(X), -1, size)
    out = np.stack([np.prod(B, axis=2), np.sum(B**2, axis=2) * np.cos(B[:, :, 0])], axis=2)
    return out.reshape(len(X), -1)


def block_pattern(n, size=4):
    rows, cols = [], []
    for b in range(n // size):
        for out in range(2):
            for j in range(size):
                rows.append(2 * b + out)
                cols.append(size * b + j)
    return np.array(rows), np.array(cols)


@pytest.mark.parametrize(
    "f, pattern, ncolors",
    [(banded, tridiagonal(24), 3), (block_diagonal, block_pattern(24), 4)],
    ids=["banded", "block-diagonal"],
)
@pytest.mark.parametrize("opts", [PLAIN, HIGH])
def test_sparse_jacobian_equals_dense(f, pattern, ncolors, opts):
    x = np.random.default_rng(3).uniform(-1, 1, 24)
    dense = jacobian(f, x, opts, budget=10**5)
    outside = np.ones(dense.derivative.shape, dtype=bool)
    outside[pattern] = False
    assert not dense.derivative[outside].any()  # the pattern is the true one
    colors = color_columns(*pattern, (int(pattern[0].max()) + 1, 24))
    assert colors.max() + 1 == ncolors
    for sparse in (
        jacobian(f, x, opts, budget=10**5, pattern=pattern),
        jacobian(f, x, opts, budget=10**5, pattern=pattern, colors=colors),
    ):
        assert np.allclose(sparse.derivative, dense.derivative, rtol=0, atol=1e-13 * np.abs(dense.derivative).max())
        assert np.allclose(sparse.error[pattern], dense.error[pattern], rtol=1e-6, atol=0)
        assert not sparse.derivative[outside].any() and not sparse.error[outside].any()
        assert sparse.evaluations < dense.evaluations / 4
        assert sparse.evaluations <= plan_evaluations("jacobian", 24, opts, ncolors=ncolors)


def test_invalid_coloring_and_colors_without_pattern_are_refused_before_evaluating():
    f = Counting(banded)
    rows, cols = tridiagonal(6)
    with pytest.raises(ValidationFailed, match="share a row"):
        jacobian(f, np.ones(6), PLAIN, budget=100, pattern=(rows, cols), colors=np.zeros(6, dtype=int))
    with pytest.raises(ValidationFailed, match="pattern"):
        jacobian(f, np.ones(6), PLAIN, budget=100, colors=np.arange(6))
    assert f.batches == []


# ---------------------------------------------------------------- refusals


def test_refusals():
    with pytest.raises(ValidationFailed):
        FDOptions(method="sideways")
    with pytest.raises(ValidationFailed):
        FDOptions(order=3)
    with pytest.raises(ValidationFailed):
        FDOptions(step=0.0)
    with pytest.raises(ValidationFailed, match="not finite"), np.errstate(invalid="ignore"):
        gradient(scalar(np.sqrt), [0.0], PLAIN, budget=100)
    with pytest.raises(ShapeError, match="scalar"):
        gradient(vector_function, X3, PLAIN, budget=100)
    with pytest.raises(ShapeError):
        jacobian(lambda X: np.ones((len(X) + 1, 2)), X3, PLAIN, budget=100)
    with pytest.raises(ShapeError):
        jvp(vector_function, X3, np.ones(2), PLAIN, budget=100)
    with pytest.raises(ValidationFailed):
        gradient(smooth_scalar, [np.nan, 0.0, 1.0], PLAIN, budget=100)
    with pytest.raises(ValidationFailed, match="too small"):
        gradient(scalar(np.exp), [1.0], FDOptions(step=1e-20), budget=100)
    # a one-sided stencil reaches where the central one cannot
    assert np.isfinite(gradient(scalar(np.sqrt), [0.0], FDOptions(method="forward", order=2), budget=100).derivative).all()
