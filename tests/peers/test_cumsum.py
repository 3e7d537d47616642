"""Peer agreement for the scans (see harness.py)."""

import numpy as np
import pytest

from tests.peers.harness import Case, check

RNG = np.random.default_rng(7)

CASES = [
    Case("sum(cumsum(x) ** 2)", lambda np, x: np.sum(np.cumsum(x) ** 2), {"x": RNG.normal(size=5)}),
    Case("sum(sin(cumsum(X, axis=0)) * X)", lambda np, X: np.sum(np.sin(np.cumsum(X, axis=0)) * X),
         {"X": RNG.normal(size=(3, 4))}),
    Case("sum(cumsum(X, axis=1) ** 3)", lambda np, X: np.sum(np.cumsum(X, axis=1) ** 3),
         {"X": RNG.normal(size=(2, 3))}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_matches_the_peer(case):
    check(case)
