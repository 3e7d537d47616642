"""Stencil weights: exact on polynomials, the classical tables, the leading error term."""

from fractions import Fraction
from math import factorial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd.engines import stencils

families = st.one_of(
    st.tuples(st.just("central"), st.sampled_from([2, 4, 6, 8]), st.integers(1, 4)),
    st.tuples(st.sampled_from(["forward", "backward"]), st.integers(1, 6), st.integers(1, 4)),
)


def apply_exact(stencil: stencils.Stencil, poly: list[Fraction], x0: Fraction, h: Fraction) -> Fraction:
    """h^-q Σ w_j P(x0 + s_j h), in exact arithmetic."""

    def p(x):
        return sum(c * x**k for k, c in enumerate(poly))

    return sum(w * p(x0 + s * h) for s, w in zip(stencil.offsets, stencil.weights)) / h**stencil.q


def derivative_exact(poly: list[Fraction], q: int, x0: Fraction) -> Fraction:
    return sum(c * Fraction(factorial(k), factorial(k - q)) * x0 ** (k - q) for k, c in enumerate(poly) if k >= q)


@settings(max_examples=60, deadline=None)
@given(
    family=families,
    coeffs=st.lists(st.integers(-50, 50), min_size=1, max_size=14),
    x0=st.fractions(-5, 5, max_denominator=7),
    h=st.fractions(Fraction(1, 64), 2, max_denominator=64),
)
def test_family_exact_on_polynomials_of_degree_below_p_plus_q(family, coeffs, x0, h):
    method, p, q = family
    stencil = stencils.family(method, p, q)
    poly = [Fraction(c) for c in coeffs[: p + q]]  # degree ≤ p + q - 1
    assert apply_exact(stencil, poly, x0, h) == derivative_exact(poly, q, x0)


@settings(max_examples=60, deadline=None)
@given(family=families, h=st.fractions(Fraction(1, 64), 2, max_denominator=64))
def test_leading_error_term_is_exact_on_the_next_monomial(family, h):
    """On x^(p+q) at 0 the error is C h^p (p+q)!, nothing else."""
    method, p, q = family
    stencil = stencils.family(method, p, q)
    order, constant = stencil.leading_error
    assert order == p
    k = p + q
    poly = [Fraction(0)] * k + [Fraction(1)]
    error = apply_exact(stencil, poly, Fraction(0), h) - derivative_exact(poly, q, Fraction(0))
    assert error == constant * h**p * factorial(k)


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.integers(-12, 12), min_size=2, max_size=9, unique=True),
    q=st.integers(1, 3),
    coeffs=st.lists(st.integers(-9, 9), min_size=1, max_size=9),
)
def test_arbitrary_grid_exact_to_its_size(offsets, q, coeffs):
    if len(offsets) <= q:
        with pytest.raises(ValueError):
            stencils.stencil(offsets, q)
        return
    stencil = stencils.stencil(offsets, q)
    poly = [Fraction(c) for c in coeffs[: len(offsets)]]
    x0, h = Fraction(1, 3), Fraction(1, 8)
    assert apply_exact(stencil, poly, x0, h) == derivative_exact(poly, q, x0)
    assert stencil.accuracy >= len(offsets) - q


@pytest.mark.parametrize(
    "method, p, q, offsets, weights, constant",
    [
        ("central", 2, 1, [-1, 1], ["-1/2", "1/2"], "1/6"),
        ("central", 4, 1, [-2, -1, 1, 2], ["1/12", "-2/3", "2/3", "-1/12"], "-1/30"),
        ("central", 8, 1, [-4, -3, -2, -1, 1, 2, 3, 4],
         ["1/280", "-4/105", "1/5", "-4/5", "4/5", "-1/5", "4/105", "-1/280"], "-1/630"),
        ("central", 2, 2, [-1, 0, 1], ["1", "-2", "1"], "1/12"),
        ("central", 4, 2, [-2, -1, 0, 1, 2], ["-1/12", "4/3", "-5/2", "4/3", "-1/12"], "-1/90"),
        ("forward", 1, 1, [0, 1], ["-1", "1"], "1/2"),
        ("forward", 2, 1, [0, 1, 2], ["-3/2", "2", "-1/2"], "-1/3"),
        ("backward", 2, 1, [-2, -1, 0], ["1/2", "-2", "3/2"], "-1/3"),
        ("forward", 1, 2, [0, 1, 2], ["1", "-2", "1"], "1"),
    ],
)
def test_classical_tables(method, p, q, offsets, weights, constant):
    stencil = stencils.family(method, p, q)
    assert list(stencil.offsets) == offsets
    assert list(stencil.weights) == [Fraction(w) for w in weights]
    assert stencil.leading_error == (p, Fraction(constant))


@pytest.mark.parametrize("p", [2, 4, 6, 8])
@pytest.mark.parametrize("q", [1, 2, 3])
def test_central_is_symmetric_and_backward_mirrors_forward(p, q):
    c = stencils.central(p, q)
    pairs = dict(zip(c.offsets, c.weights))
    assert all(pairs[-s] == (-1) ** q * w for s, w in pairs.items())
    f, b = stencils.forward(p - 1, q), stencils.backward(p - 1, q)
    assert [-s for s in f.offsets] == list(reversed(b.offsets))
    assert [(-1) ** q * w for w in f.weights] == list(reversed(b.weights))


def test_float_weights_on_a_perturbed_grid_match_exact_arithmetic():
    grid = [Fraction(-2), Fraction(-1), Fraction(0), Fraction(1) + Fraction(1, 2**40), Fraction(2)]
    exact = [float(w) for w in stencils.fornberg(grid, 1)]
    assert np.allclose(stencils.coefficients([float(s) for s in grid], 1), exact, rtol=1e-13, atol=1e-15)


def test_refusals():
    with pytest.raises(ValueError, match="distinct"):
        stencils.stencil([0, 1, 1], 1)
    with pytest.raises(ValueError, match="more than"):
        stencils.stencil([0, 1], 2)
    with pytest.raises(ValueError, match="even"):
        stencils.central(3, 1)
    with pytest.raises(ValueError, match="unknown"):
        stencils.family("sideways", 2, 1)
