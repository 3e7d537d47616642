"""numpy's ``gradient``, ``partition``, ``np.r_[...]`` and ``np.c_[...]``: values equal numpy's bit
for bit on tier 1 (within a few ulps on tier 2, XLA), derivatives equal an 8th-order finite difference
of numpy itself, and autograd's where autograd differentiates them."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from derivd.errors import DerivdError
from tests.dsl.support import assert_close, call
from tests.peers.harness import _autograd_gradients, Case
from tests.references import fd_jacobian

RNG = np.random.default_rng(5)
W = RNG.normal(size=200)

# (program over x, numpy's function of x, shapes)
CASES = [
    ("np.gradient(x)", lambda np, x: np.gradient(x), [(7,), (5, 6), (3, 4, 5)]),
    ("np.gradient(x, 0.3, edge_order=2)", lambda np, x: np.gradient(x, 0.3, edge_order=2), [(7,), (5, 6)]),
    ("np.gradient(x, axis=-1)", lambda np, x: np.gradient(x, axis=-1), [(5, 6), (3, 4, 5)]),
    ("np.gradient(x, 2.0, 0.5, axis=(1, 0))", lambda np, x: np.gradient(x, 2.0, 0.5, axis=(1, 0)), [(5, 6)]),
    ("np.gradient(x, 2.0, edge_order=2, axis=(0, -1))", lambda np, x: np.gradient(x, 2.0, edge_order=2, axis=(0, -1)),
     [(3, 4, 5)]),
    ("np.partition(x, 3)", lambda np, x: np.partition(x, 3), [(7,), (5, 6)]),
    ("np.partition(x, [0, 2, -1], axis=0)", lambda np, x: np.partition(x, [0, 2, -1], axis=0), [(5,), (5, 6)]),
    ("np.partition(x, 1, axis=None)", lambda np, x: np.partition(x, 1, axis=None), [(3, 4)]),
    ("np.r_[x, 2.0 * x, 1:4, 0:1:5j, -2.5]", lambda np, x: np.r_[x, 2.0 * x, 1:4, 0:1:5j, -2.5], [(3,)]),
    ("np.r_[x, 2.0 * x]", lambda np, x: np.r_[x, 2.0 * x], [(2, 2)]),
    ("np.c_[x, x ** 2, 0:1:0.25]", lambda np, x: np.c_[x, x ** 2, 0:1:0.25], [(4,)]),
    ("np.c_[x, np.sin(x)]", lambda np, x: np.c_[x, np.sin(x)], [(3, 2)]),
]
PARAMS = [(dsl, f, shape) for dsl, f, shapes in CASES for shape in shapes]


def draw(shape) -> np.ndarray:
    """Entries at least 0.27 apart: no tie within a finite difference's reach (partition's order
    changes there: a kink)."""
    n = int(np.prod(shape))
    grid = (np.arange(n) - n // 2 + 0.25) * 0.37 + RNG.uniform(0, 0.05, n)
    return RNG.permutation(grid).reshape(shape)


@lru_cache(maxsize=1)
def _tier1() -> Service:
    return Service(Settings(xla_tier="off"))


def tier1_value(program: str, x) -> np.ndarray:
    """The value of ``program`` on tier 1, the numpy tape, whatever ``DERIVD_XLA_TIER`` says."""
    return _tier1().compute("evaluate", Request(function={"dsl": program}, at={"x": x}))[0]["value"]


def _weighted(dsl: str, value) -> str:
    """A scalar reading every output entry with its own weight (a list output: each item)."""
    if isinstance(value, (list, tuple)):
        pieces = " + ".join(f"sum(ravel(f[{i}]) * w[{i * 60}:{i * 60 + np.size(v)}])" for i, v in enumerate(value))
        return f"f = {dsl}\n{pieces}"
    return f"f = {dsl}\nsum(ravel(f) * w[:f.size])"


@pytest.mark.parametrize("dsl, f, shape", PARAMS, ids=[f"{d} {s}" for d, _, s in PARAMS])
def test_value_is_numpys_and_the_gradient_is_the_finite_difference_of_numpy(dsl, f, shape):
    x = draw(shape)
    want = f(np, x)
    parts = list(enumerate(want)) if isinstance(want, (list, tuple)) else [(None, want)]
    for i, part in parts:
        program = dsl if i is None else f"f = {dsl}\nf[{i}]"
        # bit for bit on tier 1 (numpy's formulas term by term); tier 2 (XLA, which contracts a*b + c
        # into one fused multiply-add) within a few ulps, and tier 1's answer is the one it is checked by
        np.testing.assert_array_equal(np.reshape(tier1_value(program, x), np.shape(part)), part)
        assert_close(np.reshape(call("evaluate", program, {"x": x})["value"], np.shape(part)), part, rtol=1e-14)

    def scalar(x):
        value = f(np, x)
        if isinstance(value, (list, tuple)):
            return sum(np.sum(np.ravel(v) * W[i * 60:i * 60 + np.size(v)]) for i, v in enumerate(value))
        return np.sum(np.ravel(value) * W[:np.size(value)])

    program = _weighted(dsl, want)
    expected = fd_jacobian(scalar, {"x": x})[0]
    for mode in ("reverse", "forward"):
        r = call("gradient", program, {"x": x}, {"w": W}, mode=mode)
        assert_close(r["value"], scalar(x), rtol=1e-13)
        assert_close(np.ravel(r["gradient"]["x"]), expected, rtol=1e-8, what=f"{program} ({mode})")


# what autograd takes: no spacing or edge_order; partition of vectors; np.gradient up to 2-d
AUTOGRAD = [(d, f, s) for d, f, s in PARAMS if not any(w in d for w in ("0.", "axis=(", "_["))
            and len(s) <= (1 if "partition" in d else 2)]


@pytest.mark.parametrize("dsl, f, shape", AUTOGRAD, ids=[f"{d} {s}" for d, _, s in AUTOGRAD])
def test_autograd_agrees(dsl, f, shape):
    """autograd's own rules for the same numpy calls, where autograd has them."""
    x = draw(shape)
    want = f(np, x)
    program = _weighted(dsl, want)

    def peer(anp, x, w):
        value = f(anp, x)
        if isinstance(want, (list, tuple)):  # autograd's list is a box of its own
            return sum(anp.sum(anp.ravel(v) * w[i * 60:i * 60 + np.size(v)]) for i, v in enumerate(value))
        return anp.sum(anp.ravel(value) * w[:np.size(value)])

    (expected,) = _autograd_gradients(Case(program, peer, {"x": x}, {"w": W}))
    got = call("gradient", program, {"x": x}, {"w": W})["gradient"]["x"]
    assert_close(got, expected, rtol=1e-10)


@pytest.mark.parametrize("dsl, message", [
    ("np.gradient(x, 1.0, 2.0)", "one per axis"),
    ("np.gradient(x[:2], edge_order=2)", "too small"),
    ("np.gradient(x, edge_order=3)", "edge_order"),
    ("np.gradient(x, x)", "coordinate arrays"),
    ("np.partition(x, 7)", "out of range"),
    ("np.c_[x, 2.0]", "concatenate"),
    ("np.r_[x, 'r']", "str"),
    ("np.r_[1:]", "stop"),
])
def test_bad_arguments_are_clear_refusals(dsl, message):
    with pytest.raises(DerivdError, match=message) as e:
        call("evaluate", dsl, {"x": RNG.normal(size=5)})
    assert 400 <= e.value.status < 500
