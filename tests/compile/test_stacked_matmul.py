"""A stack of vectors times one shared matrix is written as one matrix product (not one matrix-vector
product per entry): the same numbers as np.einsum's, on both sides of the product, and in the batched
Hessian of a logistic loss against its closed form; small stacks and other shapes keep ``a @ b``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from derivd import ops
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.ops.evaluate import eval_primitive, expression
from derivd.ops.registry import FLOAT

RNG = np.random.default_rng(5)
STACKED = [((300, 20), (7, 20, 1)), ((300, 20), (2, 3, 20, 1)), ((4, 1, 300), (300, 20)),
           ((2, 3, 1, 50), (50, 90))]
PLAIN = [((3, 4), (5, 4, 1)), ((300, 20), (7, 20, 2)), ((7, 300, 20), (20, 1)), ((30, 20), (20, 10)),
         ((6, 5, 4), (6, 4, 3))]


def source(a, b) -> str:
    return expression(ops.get("matmul"), ["a", "b"], {}, [(a, FLOAT), (b, FLOAT)], scalar=False)


@pytest.mark.parametrize("shapes", STACKED + PLAIN, ids=str)
def test_matmul_equals_einsum_whichever_way_it_is_written(shapes):
    a, b = (RNG.normal(size=s) for s in shapes)
    got = eval_primitive(ops.get("matmul"), [a, b], {})
    np.testing.assert_allclose(got, np.einsum("...ij,...jk->...ik", a, b), rtol=1e-12, atol=1e-12)
    assert ("np.transpose" in source(*shapes) or "np.reshape" in source(*shapes)) == (shapes in STACKED)


def test_the_batched_hessian_of_a_logistic_loss_equals_its_closed_form():
    X, y, lam = RNG.normal(size=(500, 20)), np.sign(RNG.normal(size=500)), 0.3
    w = RNG.normal(size=20) * 0.1
    service = Service(Settings(xla_tier="off"))
    req = Request(function={"dsl": "sum(softplus(-y * (X @ w))) + 0.5 * lam * sum(w**2)"}, at={"w": w},
                  constants={"X": X, "y": y, "lam": np.float64(lam)}, wrt=["w"])
    body, _ = service.compute("hessian", req)
    s = expit(-y * (X @ w))
    np.testing.assert_allclose(body["hessian"], X.T @ (X * (s * (1 - s))[:, None]) + lam * np.eye(20),
                               rtol=1e-11, atol=1e-11)
    fn, _ = service.compiled(req)
    hvp = [t for key, t in fn._tapes.items() if key[0] == "hvp"]
    assert hvp and "np.transpose(a1)" in hvp[0].source  # the directions' stack went through one product
