"""``trace`` of numpy's reductions (with ``keepdims``, axis tuples, ``b=``), statistics, order,
contractions and the newer elementwise functions: each traced function round-trips through the
live server, its value and Jacobian equal to the same Python function run on numpy (its
eighth-order central differences), as tests/clients/test_trace.py does for the rest."""

from __future__ import annotations


import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.references import fd_jacobian
from tests.support import python_ast

RNG = np.random.default_rng(5)
M = RNG.normal(size=(4, 3))


def keepdims_and_tuples(A):
    return (np.sum(A, axis=1, keepdims=True) * A + np.mean(A, axis=(0, 1), keepdims=True)
            + np.max(A, axis=0, keepdims=True) * dd.logsumexp(A, axis=1, b=A * A, keepdims=True))


def statistics(A):
    return [np.var(A, axis=0), np.std(A, axis=1, ddof=1), dd.ptp(A, axis=0), np.median(A, axis=1),
            np.average(A, axis=1, weights=np.array([1.0, 2.0, 3.0])),
            np.reshape(np.quantile(A, [0.2, 0.7], axis=0), -1)]


def order(x):
    return (np.diff(x, n=2)[0] * x + np.sort(x) * np.arange(5) + np.cumprod(x)
            + np.concatenate([np.diff(x), np.percentile(x, [10.0])]))


def contractions(A, B):
    return [np.reshape(np.einsum("ij,jk->ik", A, B), -1), np.einsum("ii", A @ B), np.reshape(np.tensordot(A, B, 1), -1),
            np.reshape(np.inner(A, B.T), -1), np.reshape(np.kron(A[:2, :2], B[:2, :2]), -1), np.cross(A[:, 0], B[:, 1])]


def elementwise(x):
    return (np.logaddexp(x, 0.3) + np.logaddexp2(x, x * x) + np.fmax(x, 0.1) + np.fmin(x, -0.1) + np.sinc(x)
            + np.deg2rad(x) + np.degrees(x) + np.heaviside(x, 0.5) + dd.nan_to_num(x))


def gradient_and_partition(A):
    gy, gx = np.gradient(A)
    return [np.reshape(gy * gx + np.gradient(A, 0.5, axis=1, edge_order=2), -1), np.partition(A[0], 1),
            np.ravel(np.gradient(A, axis=0)[1:] * A[:-1])]


CASES = [
    (keepdims_and_tuples, {"A": RNG.normal(size=(3, 4))}),
    (statistics, {"A": RNG.normal(size=(4, 3))}),
    (order, {"x": np.array([0.7, -1.3, 2.1, 0.2, -0.4])}),
    (contractions, {"A": RNG.normal(size=(3, 3)), "B": RNG.normal(size=(3, 3))}),
    (elementwise, {"x": np.array([0.35, -0.8, 1.3])}),
    (gradient_and_partition, {"A": np.array([[0.3, -1.1, 2.0, 0.9], [-0.5, 1.4, -2.2, 0.6], [1.7, -0.2, 0.45, -1.6]])}),
]


@pytest.mark.parametrize("f, point", CASES, ids=[c[0].__name__ for c in CASES])
def test_traced_function_round_trips(sdk, f, point):
    program = dd.trace(f, **point)
    python_ast(program.dsl)
    expected = f(**point)
    expected = np.concatenate([np.ravel(e) for e in expected]) if isinstance(expected, list) else expected
    r = sdk.jacobian(program, point)
    np.testing.assert_allclose(r.value, np.ravel(expected), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.jacobian, fd_jacobian(f, point), rtol=1e-6, atol=1e-7)
