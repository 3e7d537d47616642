"""Taylor rules of eigh, svd and qr (ops/decomposition_series.py) at orders 1..4, through the service,
against the coefficients of numpy's own decomposition along the line A + t V, fitted by a 13-point
polynomial (tests/references.py): single matrices, stacks, tall, wide and square shapes. numpy's
vectors carry an arbitrary sign at each t, so the reference's columns are given the sign of the
t = 0 columns (the branch the rules follow); a repeated spectrum is a 422, as for the jvp."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.errors import DerivdError
from tests.dsl.support import call
from tests.references import taylor_coefficients

ORDER = 4
RNG = np.random.default_rng(16)


def signs(columns, reference):
    """+-1 per column (along the last axis) making ``columns`` point as ``reference`` does."""
    return np.sign(np.sum(columns * reference, axis=-2, keepdims=True))


def eigh_parts(a, v0):
    w, v = np.linalg.eigh(a)
    return [w, v * signs(v, v0)]


def svd_parts(a, u0):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    flip = signs(u, u0)
    return [u * flip, s, vt * np.swapaxes(flip, -1, -2)]


def qr_parts(a, r0):
    q, r = np.linalg.qr(a)
    flip = np.sign(np.diagonal(r, axis1=-2, axis2=-1) * np.diagonal(r0, axis1=-2, axis2=-1))[..., None, :]
    return [q * flip, r * np.swapaxes(flip, -1, -2)]


def flat(parts):
    return np.concatenate([np.reshape(p, -1) for p in parts])


def spread(shape, lo=0.5, hi=2.5):
    """A matrix (stack) with singular values spread over (lo, hi), well apart."""
    m, n = shape[-2:]
    k = min(m, n)
    u = np.linalg.qr(RNG.normal(size=shape[:-2] + (m, k)))[0]
    v = np.linalg.qr(RNG.normal(size=shape[:-2] + (n, k)))[0]
    s = np.linspace(lo, hi, k) * RNG.permutation(k).__lt__(k)  # distinct, in a random order below
    s = RNG.permuted(np.broadcast_to(s, shape[:-2] + (k,)).copy(), axis=-1)
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def symmetric(shape):
    q = np.linalg.qr(RNG.normal(size=shape))[0]
    w = RNG.permuted(np.broadcast_to(np.linspace(-1.5, 2.0, shape[-1]), shape[:-1]).copy(), axis=-1)
    a = (q * w[..., None, :]) @ np.swapaxes(q, -1, -2)
    return a + np.triu(RNG.normal(size=shape), 1)  # eigh reads the lower triangle only


CASES = [  # (program, numpy reference given A and the t = 0 parts, A)
    ("w, V = eigh(A)\nconcatenate([w.ravel(), V.ravel()])", "eigh", symmetric((3, 3))),
    ("w, V = eigh(A)\nconcatenate([w.ravel(), V.ravel()])", "eigh", symmetric((2, 4, 4))),
    ("U, s, Vt = svd(A, full_matrices=False)\nconcatenate([U.ravel(), s.ravel(), Vt.ravel()])", "svd",
     spread((3, 3))),
    ("U, s, Vt = svd(A, full_matrices=False)\nconcatenate([U.ravel(), s.ravel(), Vt.ravel()])", "svd",
     spread((4, 2))),
    ("U, s, Vt = svd(A, full_matrices=False)\nconcatenate([U.ravel(), s.ravel(), Vt.ravel()])", "svd",
     spread((2, 2, 4))),
    ("Q, R = qr(A)\nconcatenate([Q.ravel(), R.ravel()])", "qr", spread((3, 3))),
    ("Q, R = qr(A)\nconcatenate([Q.ravel(), R.ravel()])", "qr", spread((2, 4, 3))),
    ("Q, R = qr(A)\nconcatenate([Q.ravel(), R.ravel()])", "qr", spread((3, 5))),
]
REFERENCES = {"eigh": (np.linalg.eigh, 1, eigh_parts),
              "svd": (lambda a: np.linalg.svd(a, full_matrices=False), 0, svd_parts),
              "qr": (np.linalg.qr, 1, qr_parts)}


@pytest.mark.parametrize("dsl,kind,a", CASES, ids=[f"{k}{list(a.shape)}" for _, k, a in CASES])
def test_coefficients_match_numpy_along_a_line(dsl, kind, a):
    v = 0.3 * RNG.uniform(-1.0, 1.0, a.shape)
    decompose, which, parts = REFERENCES[kind]
    anchor = decompose(a)[which]
    want = taylor_coefficients(lambda t: flat(parts(a + t * v, anchor)), ORDER, h=0.04, half=8)
    got = call("taylor", dsl, {"A": a}, order=ORDER, v={"A": v})["coefficients"]
    for k in range(ORDER + 1):
        scale = max(1.0, float(np.max(np.abs(want[k]))))
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6 * scale, err_msg=f"{kind}: order {k}")


@pytest.mark.parametrize("dsl,a", [
    ("eigvalsh(A)", np.diag([1.0, 1.0, 2.0])),
    ("sum(eigvalsh(A) ** 2)", np.diag([1.0, 1.0, 2.0])),
    ("svd(A, compute_uv=False)", np.diag([1.0, 1.0, 2.0])),
    ("svd(A, compute_uv=False)", np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])),
])
def test_values_alone_at_a_repeated_or_zero_value_first_order_only(dsl, a):
    """The first coefficient of eigenvalues (singular values) alone reads no gap: answered at a repeated
    (or, for svd, zero) value with the jvp's convention (numpy's basis there: exact for symmetric
    functions of the spectrum, as sum(w ** 2) is: 2 <A, V>); from the second, which reads the vectors'
    first, and for the vectors themselves, a 422 that says why."""
    v = RNG.uniform(-1.0, 1.0, a.shape)
    got = call("taylor", dsl, {"A": a}, order=1, v={"A": v})["coefficients"]
    np.testing.assert_allclose(got[1], call("jvp", dsl, {"A": a}, v={"A": v})["jvp"], rtol=1e-15)
    if dsl.startswith("sum"):
        np.testing.assert_allclose(got[1], 2 * np.sum(np.tril(a) * np.tril(v) + np.tril(a, -1) * np.tril(v, -1)),
                                   rtol=1e-14)
    vectors = "w, V = eigh(A)\nV" if "eigvalsh" in dsl else "U, s, Vt = svd(A, full_matrices=False)\nU"
    for program, order in [(dsl, 2), (vectors, 1)]:
        with pytest.raises(DerivdError, match="repeat") as refused:
            call("taylor", program, {"A": a}, order=order, v={"A": v})
        assert refused.value.status == 422
