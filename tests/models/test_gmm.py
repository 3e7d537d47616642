"""Gaussian mixture negative log-likelihood, ADBench's parameterisation, written in the DSL.

K = 5 components in d = 2 dimensions, n = 1000 points. Component k has weight
softmax(alphas)_k, mean means[k] and precision QₖᵀQₖ, where Qₖ is lower triangular
with diagonal exp(icf[k, :d]) and the strictly lower entries icf[k, d:] column by
column (ADBench's icf). With the Wishart prior of ADBench
(gamma = 1, m = 0), the objective is

    NLL = -Σᵢ log Σₖ softmax(α)ₖ N(xᵢ | μₖ, (QₖᵀQₖ)⁻¹) + ½ Σₖ (‖diag Qₖ‖² + ‖offdiag Qₖ‖²).

The reference is a separate implementation on scipy.stats.multivariate_normal
(covariances, not precisions), and its gradient 8th-order finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp as np_logsumexp
from scipy.stats import multivariate_normal

from tests.dsl.support import assert_close, call
from tests.references import central_difference, fd_jacobian

SIZES = [(5, 2, 1000), (3, 4, 60)]  # (K, d, n): the brief's instance, and one with several off-diagonals


def gmm_program(K, D, N):
    return f"""
# Gaussian mixture NLL (ADBench parameterisation): precisions Q_k' Q_k, Q_k lower triangular
logdiag = icf[:, :{D}]
offdiag = concat([zeros(({K}, 1)), icf[:, {D}:]], axis=1)
Q = reshape(offdiag[:, lower], ({K}, {D}, {D})) + reshape(exp(logdiag), ({K}, {D}, 1)) * eye({D})
xc = reshape(x, ({N}, 1, {D})) - reshape(means, (1, {K}, {D}))
Qx = sum(reshape(Q, (1, {K}, {D}, {D})) * reshape(xc, ({N}, {K}, 1, {D})), axis=3)
log_joint = reshape(alphas + sum(logdiag, axis=1), (1, {K})) - 0.5 * sum(Qx ** 2, axis=2)
loglik = sum(logsumexp(log_joint, axis=1)) - {N} * logsumexp(alphas) - {N * D / 2} * log(2 * pi)
prior = 0.5 * (sum(exp(logdiag) ** 2) + sum(icf[:, {D}:] ** 2))
prior - loglik
"""


def lower_index(d):
    """Position in [0, offdiag...] of each entry of a d x d matrix: 1 + its column-major strict-lower rank."""
    idx, j = np.zeros((d, d), dtype=np.int64), 1
    for col in range(d):
        for row in range(col + 1, d):
            idx[row, col] = j
            j += 1
    return idx.reshape(-1)


def reference_nll(alphas, means, icf, x):
    """The same model by another road: covariances inv(QᵀQ) and scipy's Gaussian log-densities."""
    K, D = means.shape
    weights = np.log(np.exp(alphas - alphas.max()) / np.exp(alphas - alphas.max()).sum())
    logs = []
    for k in range(K):
        q = np.diag(np.exp(icf[k, :D]))
        rows, cols = np.tril_indices(D, -1)
        order = np.lexsort((rows, cols))  # column by column, as ADBench fills it
        q[rows[order], cols[order]] = icf[k, D:]
        cov = np.linalg.inv(q.T @ q)
        logs.append(weights[k] + multivariate_normal(means[k], cov).logpdf(x))
    loglik = np_logsumexp(np.stack(logs, axis=1), axis=1).sum()
    prior = 0.5 * (np.sum(np.exp(icf[:, :D]) ** 2) + np.sum(icf[:, D:] ** 2))
    return prior - loglik


@pytest.fixture(scope="module", params=SIZES, ids=[f"K{k}_d{d}_n{n}" for k, d, n in SIZES])
def problem(request):
    K, D, N = request.param
    rng = np.random.default_rng(7)
    at = {"alphas": rng.normal(size=K), "means": rng.normal(size=(K, D)) * 2,
          "icf": rng.normal(size=(K, D + D * (D - 1) // 2)) * 0.5}
    return gmm_program(K, D, N), at, {"x": rng.normal(size=(N, D)) * 2, "lower": lower_index(D)}


def test_gmm_value_and_gradient_against_scipy_and_finite_differences(problem):
    GMM, at, constants = problem
    want = reference_nll(**at, x=constants["x"])
    r = call("gradient", GMM, at, constants)
    assert r["value"] == pytest.approx(want, rel=1e-12)
    grad = np.concatenate([np.reshape(r["gradient"][k], -1) for k in at])
    fd = fd_jacobian(lambda **kw: reference_nll(**kw, x=constants["x"]), at)[0]
    assert_close(grad, fd, 1e-7, "GMM gradient vs finite differences of the scipy reference")
    fwd = call("jacobian", GMM, at, constants, mode="forward")
    assert_close(np.reshape(fwd["jacobian"], -1), grad, 1e-12, "forward vs reverse")


def test_gmm_hessian_vector_product_against_finite_differences_of_the_gradient(problem):
    GMM, at, constants = problem
    rng = np.random.default_rng(3)
    v = {k: rng.normal(size=np.shape(a)) for k, a in at.items()}
    r = call("hvp", GMM, at, constants, v=v)
    got = np.concatenate([np.reshape(r["hvp"][k], -1) for k in at])

    def grad_at(t):
        g = call("gradient", GMM, {k: a + t * v[k] for k, a in at.items()}, constants)["gradient"]
        return np.concatenate([np.reshape(g[k], -1) for k in at])

    fd = central_difference(grad_at, 1e-3)
    assert_close(got, fd, 1e-7, "GMM HVP vs finite differences of the gradient")
