"""Summed products written as np.einsum by the code generator: the same numbers as numpy's
product-then-sum, derivatives through them equal to the unfused ones, and no fusion where the
product is needed elsewhere or too small to gain."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from derivd.dsl import InputSpec
from derivd.compile import codegen
from derivd.engines import reverse
from derivd.engines.function import CompiledFunction
from derivd.ops.registry import FLOAT
from tests.references import central_difference

RNG = np.random.default_rng(7)
CASES = [  # (program, input shapes, numpy reference)
    ("sum(reshape(q, (1, 5, 10, 10)) * reshape(v, (100, 5, 1, 10)), axis=3)",  # batched mat-vec (GMM)
     {"q": (5, 10, 10), "v": (100, 5, 10)},
     lambda q, v: np.sum(q[None] * v[:, :, None, :], axis=3)),
    ("sum(a * b, axis=0)", {"a": (400, 20), "b": (400, 20)}, lambda a, b: np.sum(a * b, axis=0)),
    ("sum(a * b, axis=(0, 1))", {"a": (64, 8, 12), "b": (12,)}, lambda a, b: np.sum(a * b, axis=(0, 1))),
    ("sum(a * a, axis=-1)", {"a": (300, 30)}, lambda a: np.sum(a * a, axis=-1)),
    ("sum(reshape(a, (80, 1, 60)) * reshape(b, (1, 70, 60)), axis=2)", {"a": (80, 60), "b": (70, 60)},
     lambda a, b: a @ b.T),  # a matrix product written with broadcasting
]


def compiled(dsl, shapes):
    return CompiledFunction(dsl, {k: InputSpec(s, FLOAT, "at") for k, s in shapes.items()}, Settings())


@pytest.mark.parametrize("dsl,shapes,reference", CASES, ids=[c[0][:40] for c in CASES])
def test_contracted_products_keep_their_values_and_derivatives(dsl, shapes, reference, monkeypatch):
    fn = compiled(dsl, shapes)
    tape, _ = fn.eval_tape()
    assert "np.einsum" in tape.source and " * " not in tape.source  # the product is never written out
    values = {k: RNG.normal(size=s) for k, s in shapes.items()}
    (y,) = fn.run(tape, values)
    np.testing.assert_allclose(y, reference(**values), rtol=1e-12, atol=1e-12)
    # the gradient of a scalar of it (its vjp is a summed broadcast product too) against the same
    # program compiled without contractions, and a directional derivative against differences
    names = list(shapes)
    scalar = f"sum(({dsl}) ** 2)"
    _, fused, _ = reverse.gradient(compiled(scalar, shapes), values, names)
    monkeypatch.setattr(codegen, "CONTRACT_MIN_SIZE", float("inf"))
    plain_fn = compiled(scalar, shapes)
    _, plain, _ = reverse.gradient(plain_fn, values, names)
    assert "np.einsum" not in plain_fn.eval_tape()[0].source
    for g, p in zip(fused, plain):
        np.testing.assert_allclose(g, p, rtol=1e-12, atol=1e-12)
    v = {k: RNG.normal(size=s) for k, s in shapes.items()}
    f = lambda t: plain_fn.run(plain_fn.eval_tape()[0], {k: values[k] + t * v[k] for k in names})[0]  # noqa: E731
    slope = central_difference(f, 1e-3)
    np.testing.assert_allclose(sum(np.vdot(g, v[k]) for g, k in zip(fused, names)), slope, rtol=1e-7)


def test_blas_only_for_few_batches():
    """numpy's optimised einsum takes a diagonal after a tensordot over batch axes: kept for GMM's
    five components, never for a column-wise dot over 400 columns."""
    few = compiled(CASES[0][0], CASES[0][1]).eval_tape()[0].source
    many = compiled("sum(a * b, axis=0)", {"a": (400, 20), "b": (400, 20)}).eval_tape()[0].source
    assert "optimize=True" in few and "np.einsum" in many and "optimize" not in many


def test_the_vjp_contracts_the_cotangent_before_its_broadcast():
    """A broadcast product's vjp multiplies a broadcast cotangent: einsum reads the cotangent itself
    (size-1 axes squeezed), so the gradient of the batched mat-vec is three BLAS contractions."""
    dsl, shapes, _ = CASES[0]
    fn = compiled(f"sum(({dsl}) ** 2)", shapes)
    source = reverse._vjp_tape(fn, reverse.Wrt(fn, list(shapes)), None)[0].source
    assert source.count("np.einsum") == 3 and source.count("optimize=True") == 3
    assert "broadcast_to" not in source


def test_a_product_used_twice_or_small_is_not_contracted():
    twice = compiled("p = a * b\nsum(p, axis=0) + p[0]", {"a": (400, 20), "b": (400, 20)})
    assert "np.einsum" not in twice.eval_tape()[0].source
    small = compiled("sum(a * b, axis=0)", {"a": (40, 20), "b": (40, 20)})
    assert "np.einsum" not in small.eval_tape()[0].source


def test_gmm_through_the_service_matches_its_reference():
    from tests.models.test_gmm import gmm_program, lower_index, reference_nll

    k, d, n = 3, 6, 300  # a product of 32,400 entries: contracted
    at = {"alphas": RNG.normal(size=k), "means": RNG.normal(size=(k, d)),
          "icf": RNG.normal(size=(k, d + d * (d - 1) // 2)) * 0.3}
    x = RNG.normal(size=(n, d))
    out, _ = Service(Settings()).compute("evaluate", Request(function={"dsl": gmm_program(k, d, n)}, at=at,
                                                             constants={"x": x, "lower": lower_index(d)}))
    np.testing.assert_allclose(out["value"], reference_nll(at["alphas"], at["means"], at["icf"], x), rtol=1e-12)
