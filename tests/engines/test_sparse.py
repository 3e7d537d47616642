"""Sparse Jacobians and Hessians by colouring (engines/sparse.py) equal dense ones.

Families with known structure — banded, arrowhead, block-diagonal, random-sparse (gathers
with random index arrays) — at random sizes and points: the COO answer, scattered into a
matrix, equals the dense answer of the uncompressed engines to rounding, its entries are
exactly the detected pattern, and it took fewer passes than the dense one. Analytic
values pin one member of each family.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd.config import Settings
from derivd.core import Request, Service

FAMILIES = {
    # name: (Jacobian program, Hessian program), in x (n,) and index constants i, j (n,)
    "banded": ("x[2:]**2 * x[1:-1] - sin(x[:-2])", "sum(x[2:]**2 * x[1:-1] - sin(x[:-2]) * x[1:-1])"),
    "arrowhead": ("x * x[-1] + sin(x)", "sum(exp(x[:-1] * x[-1])) + sum(x**2)"),
    "block-diagonal": ("reshape(softmax(reshape(x, (-1, 3)), axis=1), (-1,))",
                       "sum(logsumexp(reshape(x, (-1, 3)), axis=1))"),
    "random-sparse": ("x[i] * sin(x[j]) + x", "sum(x[i] * x[j] * x) + sum(cos(x[j]))"),
}


@pytest.fixture(scope="module")
def service():
    return Service(Settings())


def call(service, endpoint, **kw):
    return service.compute(endpoint, Request(**kw))[0]


def dense_of(coo):
    out = np.zeros(coo["shape"])
    out[coo["rows"], coo["cols"]] = coo["values"]
    return out


def inputs(seed, blocks):
    rng = np.random.default_rng(seed)
    n = 3 * blocks
    return {"x": rng.uniform(-1, 1, n)}, {"i": rng.integers(0, n, n), "j": rng.integers(0, n, n)}


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), blocks=st.integers(2, 8))
def test_sparse_equals_dense(service, family, seed, blocks):
    jac_program, hess_program = FAMILIES[family]
    at, constants = inputs(seed, blocks)
    n = at["x"].size
    for mode in ("auto", "forward", "reverse"):
        sparse = call(service, "jacobian", function={"dsl": jac_program}, at=at, constants=constants, mode=mode,
                      sparse=True)
        dense = call(service, "jacobian", function={"dsl": jac_program}, at=at, constants=constants, mode="forward")
        got = dense_of(sparse["jacobian"])
        np.testing.assert_allclose(got, dense["jacobian"], rtol=1e-14, atol=1e-15)
        assert sparse["sparsity"]["nnz"] == len(sparse["jacobian"]["rows"])
        assert sparse["engine"] == (mode if mode != "auto" else sparse["engine"])
    hs = call(service, "hessian", function={"dsl": hess_program}, at=at, constants=constants, sparse=True)
    hd = call(service, "hessian", function={"dsl": hess_program}, at=at, constants=constants, mode="forward")
    np.testing.assert_allclose(dense_of(hs["hessian"]), hd["hessian"], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(hs["gradient"]["x"], hd["gradient"]["x"], rtol=1e-14, atol=1e-15)
    assert hs["sparsity"]["colors"] <= n


def test_colours_per_family_are_what_the_structure_allows(service):
    at, constants = inputs(11, 10)  # n = 30
    colors = {}
    for family, (jac_program, hess_program) in FAMILIES.items():
        j = call(service, "jacobian", function={"dsl": jac_program}, at=at, constants=constants, sparse=True)
        h = call(service, "hessian", function={"dsl": hess_program}, at=at, constants=constants, sparse=True)
        colors[family] = (j["sparsity"]["colors"], h["sparsity"]["colors"])
    assert colors["banded"] == (3, 3)  # a tridiagonal Jacobian (rows of width 3) and Hessian
    assert colors["arrowhead"] == (2, 2)  # rows coloured (the dense column); star: hub + leaves
    assert colors["block-diagonal"] == (3, 3)
    assert max(colors["random-sparse"]) < 30


def test_arrowhead_values_are_analytic(service):
    x = np.random.default_rng(4).uniform(-1, 1, 20)
    h = call(service, "hessian", function={"dsl": FAMILIES["arrowhead"][1]}, at={"x": x}, sparse=True)
    t, e = x[-1], np.exp(x[:-1] * x[-1])
    want = 2 * np.eye(20)
    want[np.arange(19), np.arange(19)] += t * t * e
    want[-1, :-1] = want[:-1, -1] = e * (1 + x[:-1] * t)
    want[-1, -1] += np.sum(x[:-1] ** 2 * e)
    np.testing.assert_allclose(dense_of(h["hessian"]), want, rtol=1e-13, atol=1e-13)
    assert h["sparsity"] == {**h["sparsity"], "nnz": 20 + 2 * 19, "colors": 2}


def test_a_pattern_entry_that_is_zero_here_is_kept(service):
    r = call(service, "jacobian", function={"dsl": "[x[0] * x[1], x[2]]"}, at={"x": np.array([3.0, 0.0, 1.0])},
             sparse=True)
    coo = r["jacobian"]
    entries = dict(zip(zip(coo["rows"].tolist(), coo["cols"].tolist()), coo["values"].tolist()))
    assert entries == {(0, 0): 0.0, (0, 1): 3.0, (1, 2): 1.0}


def test_auto_mode_uses_colouring_when_it_saves_passes(service):
    x = np.random.default_rng(1).uniform(-1, 1, 40)
    r = call(service, "jacobian", function={"dsl": FAMILIES["banded"][0]}, at={"x": x})
    assert isinstance(r["jacobian"], np.ndarray) and r["jacobian"].shape == (38, 40)
    assert r["sparsity"]["colors"] == 3 and r["sparsity"]["nnz"] == 3 * 38
    d = call(service, "jacobian", function={"dsl": FAMILIES["banded"][0]}, at={"x": x}, mode="forward")
    assert "sparsity" not in d
    np.testing.assert_allclose(r["jacobian"], d["jacobian"], rtol=1e-14, atol=1e-15)
    dense_program = call(service, "jacobian", function={"dsl": "x * sum(x**2)"}, at={"x": x})
    assert "sparsity" not in dense_program  # 40 colours: nothing saved, the dense engine answers
    h = call(service, "hessian", function={"dsl": FAMILIES["banded"][1]}, at={"x": x})
    assert h["sparsity"]["colors"] == 3 and h["hessian"].shape == (40, 40)


def test_patterns_over_the_budget_fall_back_to_dense():
    small = Service(Settings(max_pattern_nnz=20))
    x = np.random.default_rng(9).uniform(-1, 1, 12)
    full = Service(Settings())
    for endpoint, program in (("jacobian", FAMILIES["banded"][0]), ("hessian", FAMILIES["banded"][1])):
        got = call(small, endpoint, function={"dsl": program}, at={"x": x}, sparse=True)
        want = call(full, endpoint, function={"dsl": program}, at={"x": x}, mode="forward")
        matrix = got[endpoint]
        assert len(matrix["rows"]) == np.prod(matrix["shape"])  # every entry: no pattern to omit any
        np.testing.assert_allclose(dense_of(matrix), want[endpoint], rtol=1e-14, atol=1e-15)
        assert got["sparsity"]["nnz"] == np.prod(matrix["shape"])


def test_http_sparse_jacobian(client):
    x = np.linspace(-1, 1, 25)
    r = client.post("/v1/jacobian", json={"function": {"dsl": FAMILIES["banded"][0]}, "at": {"x": x.tolist()},
                                          "sparse": True})
    assert r.status_code == 200, r.text
    body = r.json()
    coo = body["jacobian"]
    assert coo["shape"] == body["shape"] == [23, 25]
    assert set(body["sparsity"]) == {"nnz", "colors", "pattern_seconds"}
    want = np.zeros((23, 25))
    i = np.arange(23)
    want[i, i + 2] = 2 * x[2:] * x[1:-1]
    want[i, i + 1] = x[2:] ** 2
    want[i, i] = -np.cos(x[:-2])
    np.testing.assert_allclose(dense_of(coo), want, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("iterations", [5, 300])
def test_loop_programs_colour_like_unrolled_ones(iterations):
    """A recurrence kept as a loop node is seen through by the detector: a diagonal Jacobian is one
    pass, a Hessian one HVP, and the values are the dense engines'."""
    loops = Service(Settings(loop_unroll_nodes=0))
    x = np.linspace(-0.8, 0.9, 40)
    step = f"s = x\nfor i in range({iterations}):\n    s = sin(s) * 0.5 + x * 0.3 + 0.1 * concat([s[1:], zeros(1)])\n"
    jac = loops.compute("jacobian", Request(function={"dsl": step + "s"}, at={"x": x}, sparse=True))[0]
    dense = loops.compute("jacobian", Request(function={"dsl": step + "s"}, at={"x": x}, mode="forward"))[0]
    got = np.zeros((40, 40))
    got[jac["jacobian"]["rows"], jac["jacobian"]["cols"]] = jac["jacobian"]["values"]
    np.testing.assert_allclose(got, dense["jacobian"], rtol=1e-12, atol=1e-15)
    upper = min(iterations, 39)  # s[i] reads x[i..i + iterations]
    assert jac["sparsity"]["nnz"] == sum(min(40 - i, upper + 1) for i in range(40))
    assert jac["sparsity"]["colors"] == upper + 1
    diagonal = "s = x\nfor i in range(%d):\n    s = sin(s) * 0.5 + x\nsum(s)" % iterations
    hess = loops.compute("hessian", Request(function={"dsl": diagonal}, at={"x": x}, sparse=True))[0]
    full = loops.compute("hessian", Request(function={"dsl": diagonal}, at={"x": x}, mode="reverse"))[0]
    assert hess["sparsity"]["colors"] == 1
    got = np.zeros((40, 40))
    got[hess["hessian"]["rows"], hess["hessian"]["cols"]] = hess["hessian"]["values"]
    np.testing.assert_allclose(got, full["hessian"], rtol=1e-12, atol=1e-15)
