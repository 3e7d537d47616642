"""Peer agreement for scipy.special (see harness.py): our gradients against autograd's, whose
autograd.scipy.special differentiates most of these; the rest are peered by their definitions in
the peer's numpy (xlogy = x log y, ndtr = erfc(-x/√2)/2, ...). Below the cases: the arguments that
take no derivative (a Bessel order, gammainc's shape) are refused by name, never answered with a zero."""

import numpy as np
import pytest

from derivd.errors import NoDerivativeRule
from tests.dsl.support import call
from tests.peers import harness
from tests.peers.harness import Case, check

RNG = np.random.default_rng(16)


def sp(np_module):
    """The peer's scipy.special, beside the numpy module it hands us."""
    if np_module.__name__.startswith("jax"):
        import jax.scipy.special

        return jax.scipy.special
    import autograd.scipy.special

    return autograd.scipy.special


def pos(*shape, lo=0.5, hi=3.0):
    return RNG.uniform(lo, hi, size=shape)


def unit(*shape):
    return RNG.uniform(-0.8, 0.8, size=shape)


SQRT2 = np.sqrt(2.0)

CASES = [
    Case("sum(gammaln(x) * x)", lambda np, x: np.sum(sp(np).gammaln(x) * x), {"x": pos(4)}),
    Case("sum(gammaln(x))", lambda np, x: np.sum(sp(np).gammaln(x)), {"x": np.array([-2.5, -1.4, -0.6, 1.7])}),
    Case("sum(gamma(x) ** 2)", lambda np, x: np.sum(sp(np).gamma(x) ** 2), {"x": pos(2, 3)}),
    Case("sum(digamma(x) * psi(2.0 * x))", lambda np, x: np.sum(sp(np).digamma(x) * sp(np).digamma(2.0 * x)),
         {"x": pos(4)}),
    Case("sum(polygamma(2, x))", lambda np, x: np.sum(sp(np).polygamma(2, x)), {"x": pos(3)}),
    Case("sum(beta(a, b))", lambda np, a, b: np.sum(sp(np).beta(a, b)), {"a": pos(3), "b": pos(3)}),
    Case("sum(betaln(a, b) * a)", lambda np, a, b: np.sum(sp(np).betaln(a, b) * a), {"a": pos(2, 3), "b": pos(3)}),
    Case("sum(erfinv(x) ** 3)", lambda np, x: np.sum(sp(np).erfinv(x) ** 3), {"x": unit(4)}),
    Case("sum(erfcinv(x + 1.0))", lambda np, x: np.sum(sp(np).erfinv(-x)), {"x": unit(4)}),
    Case("sum(logit(x))", lambda np, x: np.sum(sp(np).logit(x)), {"x": RNG.uniform(0.1, 0.9, 4)}),
    Case("sum(log_expit(x))", lambda np, x: np.sum(-np.logaddexp(0.0, -x)), {"x": RNG.normal(size=4) * 3}),
    Case("sum(xlogy(x, y))", lambda np, x, y: np.sum(x * np.log(y)), {"x": RNG.normal(size=4), "y": pos(4)}),
    Case("sum(xlog1py(x, y))", lambda np, x, y: np.sum(x * np.log1p(y)), {"x": RNG.normal(size=4), "y": pos(4)}),
    Case("sum(entr(x))", lambda np, x: np.sum(-x * np.log(x)), {"x": pos(4)}),
    Case("sum(rel_entr(x, y))", lambda np, x, y: np.sum(x * np.log(x / y)), {"x": pos(4), "y": pos(4)}),
    Case("sum(ndtr(x))", lambda np, x: np.sum(0.5 * sp(np).erfc(-x / SQRT2)), {"x": RNG.normal(size=4)}),
    Case("sum(log_ndtr(x))", lambda np, x: np.sum(np.log(0.5 * sp(np).erfc(-x / SQRT2))), {"x": RNG.normal(size=4)}),
    Case("sum(ndtri(x))", lambda np, x: np.sum(SQRT2 * sp(np).erfinv(2.0 * x - 1.0)), {"x": RNG.uniform(0.1, 0.9, 4)}),
    Case("sum(i0(x) + i1(x))", lambda np, x: np.sum(sp(np).i0(x) + sp(np).i1(x)), {"x": RNG.normal(size=4)}),
    Case("sum(i0e(x) * i1e(x))", lambda np, x: np.sum(np.exp(-2.0 * np.abs(x)) * sp(np).i0(x) * sp(np).i1(x)),
         {"x": RNG.normal(size=4)}),
    Case("sum(iv(2.5, x))", lambda np, x: np.sum(sp(np).iv(2.5, x)), {"x": pos(4)}),
    Case("sum(ive(1.5, x))", lambda np, x: np.sum(sp(np).ive(1.5, x)), {"x": pos(4)}),
    Case("sum(j0(x) * j1(x))", lambda np, x: np.sum(sp(np).j0(x) * sp(np).j1(x)), {"x": RNG.normal(size=4) * 3}),
    Case("sum(jn(3, x))", lambda np, x: np.sum(sp(np).jn(3, x)), {"x": RNG.normal(size=4) * 3}),
    Case("sum(y0(x) + y1(x))", lambda np, x: np.sum(sp(np).y0(x) + sp(np).y1(x)), {"x": pos(4)}),
    Case("sum(yn(2, x))", lambda np, x: np.sum(sp(np).yn(2, x)), {"x": pos(4)}),
    Case("sum(multigammaln(x, 3))", lambda np, x: np.sum(sp(np).multigammaln(x, 3)), {"x": pos(4, lo=1.5, hi=4.0)}),
    Case("sum(gammainc(a, x) + gammaincc(a, 2.0 * x))", lambda np, x, a: np.sum(sp(np).gammainc(a, x)
                                                                               + sp(np).gammaincc(a, 2.0 * x)),
         {"x": pos(4)}, constants={"a": pos(4)}),
    Case("sum(rgamma(x) * special.rgamma(-x))", lambda np, x: np.sum(sp(np).rgamma(x) * sp(np).rgamma(-x)),
         {"x": pos(4, lo=0.3, hi=2.0)}),
    Case("sum(betainc(a, 2.5, x))", lambda np, x, a: np.sum(sp(np).betainc(a, 2.5, x)),
         {"x": pos(4, lo=0.1, hi=0.9)}, constants={"a": pos(4, lo=0.6, hi=3.0)}),
]


# functions JAX's scipy.special does not have: autograd is their peer
AUTOGRAD_ONLY = ("iv(", "ive(", "j0(", "jn(", "y0(", "yn(", "rgamma(")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_matches_the_peer(case, monkeypatch):
    if any(name in case.dsl for name in AUTOGRAD_ONLY):
        monkeypatch.setattr(harness, "PEERS", {"autograd": harness.PEERS["autograd"]})
    check(case)


@pytest.mark.parametrize("dsl,argument", [("sum(iv(v, x))", "v"), ("sum(jn(v, x))", "n"), ("sum(yn(v, x))", "n"),
                                          ("sum(gammainc(v, x))", "a"), ("sum(gammaincc(v, x))", "a"),
                                          ("sum(betainc(v, 2.0, x))", "a"), ("sum(betainc(1.5, v, x))", "b")])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_an_order_or_shape_parameter_takes_no_derivative(dsl, argument, mode):
    """Differentiated in its order (or gammainc's shape a), a function is refused naming that argument;
    as a constant it is fine."""
    at = {"v": np.array([1.0, 2.0]), "x": np.array([0.3, 0.7])}  # in betainc's domain too
    with pytest.raises(NoDerivativeRule, match=f"argument {argument}"):
        call("gradient", dsl, at, mode=mode)
    assert np.all(np.isfinite(call("gradient", dsl, {"x": at["x"]}, {"v": at["v"]}, mode=mode)["gradient"]["x"]))


def test_erfinv_taylor_series_has_the_inverse_functions_derivatives():
    """erfinv's Taylor coefficients (its own recurrence) against the derivatives of an inverse function:
    erf(erfinv(x)) = x gives y1 = √π/2 e^{y²}, y2 = 2 y y1², y3 = 2 y1³ + 4 y y1 y2 (y_k the k-th derivative)."""
    from scipy.special import erfinv

    x0 = 0.3
    got = call("taylor", "erfinv(x)", {"x": np.array(x0)}, order=3, v={"x": np.array(1.0)})
    y = erfinv(x0)
    d1 = np.sqrt(np.pi) / 2 * np.exp(y * y)
    d2 = 2 * y * d1 * d1
    d3 = 2 * d1 ** 3 + 4 * y * d1 * d2
    np.testing.assert_allclose(np.ravel(got["derivatives"])[1:4], [d1, d2, d3], rtol=1e-10)
