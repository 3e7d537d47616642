"""Peer agreement for solve_sylvester (see harness.py): autograd's scipy.linalg.solve_sylvester
(JAX has none), first and second order, and its Taylor series against a polynomial fit of scipy's
values along a line."""

import numpy as np
import pytest
import scipy.linalg

from tests.dsl.support import call
from tests.peers import harness
from tests.peers.harness import Case, check

RNG = np.random.default_rng(23)


def spd(n):
    r = RNG.uniform(-1.0, 1.0, size=(n, n))
    return r @ r.T / n + np.eye(n)


def _sylvester(np_module):
    if np_module.__name__.startswith("autograd"):
        import autograd.scipy.linalg

        return autograd.scipy.linalg.solve_sylvester
    return scipy.linalg.solve_sylvester


W = RNG.normal(size=(3, 2))
CASES = [
    Case("sum(scipy.linalg.solve_sylvester(A, B, Q) * W)",
         lambda np, A, B, Q, W: np.sum(_sylvester(np)(A, B, Q) * W),
         {"A": spd(3), "B": spd(2), "Q": RNG.normal(size=(3, 2))}, constants={"W": W}),
    Case("sum(solve_sylvester(A, A.T @ A, Q) ** 2)",
         lambda np, A, Q: np.sum(_sylvester(np)(A, np.dot(A.T, A), Q) ** 2),
         {"A": spd(3), "Q": RNG.normal(size=(3, 3))}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_matches_autograd(case, monkeypatch):
    monkeypatch.setattr(harness, "PEERS", {"autograd": harness.PEERS["autograd"]})
    check(case)


def test_taylor_series_along_a_line_is_scipys():
    A, B, Q = spd(3), spd(2), RNG.normal(size=(3, 2))
    dA, dB, dQ = RNG.normal(size=(3, 3)), RNG.normal(size=(2, 2)), RNG.normal(size=(3, 2))
    got = call("taylor", "sum(solve_sylvester(A, B, Q) * W)", {"A": A, "B": B, "Q": Q}, {"W": W},
               v={"A": dA, "B": dB, "Q": dQ}, order=4)["coefficients"].ravel()
    hs = np.linspace(-0.04, 0.04, 25)
    fit = np.polynomial.polynomial.polyfit(
        hs, [np.sum(scipy.linalg.solve_sylvester(A + h * dA, B + h * dB, Q + h * dQ) * W) for h in hs], 10)
    np.testing.assert_allclose(got, fit[:5], rtol=1e-6, atol=1e-8)


def test_a_stack_is_solved_matrix_by_matrix():
    A, B, Q = np.stack([spd(2), spd(2)]), spd(3), RNG.normal(size=(2, 2, 3))
    got = call("evaluate", "solve_sylvester(A, B, Q)", {"A": A, "B": B, "Q": Q})["value"]
    want = np.stack([scipy.linalg.solve_sylvester(A[i], B, Q[i]) for i in range(2)])
    np.testing.assert_allclose(np.reshape(got, want.shape), want, rtol=1e-12)
