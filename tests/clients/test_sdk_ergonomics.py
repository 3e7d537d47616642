"""The SDK's small courtesies: a mistyped keyword or a None input is named, sparse Jacobians reach
scipy, counts arrive as ints, stored functions list their inputs in source order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import derivd_client as dd
from tests.references import fd_jacobian


def test_an_unknown_keyword_is_named_not_sent_as_an_input(sdk):
    with pytest.raises(TypeError, match=r"unknown keyword wtr= \(did you mean wrt=\?\)"):
        sdk.gradient("sum(x**2)", x=[1.0, 2.0], wtr=["x"])
    with pytest.raises(TypeError, match="unknown keyword sparse="):  # jacobian's option, not gradient's
        sdk.gradient("sum(x**2)", x=[1.0, 2.0], sparse=True)
    with pytest.raises(TypeError, match="unknown keyword y="):
        sdk.gradient(dd.Blackbox("sim"), x=[1.0], y=[2.0])
    # an input bound by keyword still works, for text, a stored function and a Python function
    assert sdk.gradient("sum(x * w)", x=[1.0, 2.0], w=[3.0, 4.0], wrt=["x"]).gradient["x"].tolist() == [3.0, 4.0]
    ref = sdk.register_function("sum(w * x)")
    assert sdk.gradient(ref, x=[1.0, 2.0], w=[3.0, 4.0], wrt=["w"]).gradient["w"].tolist() == [1.0, 2.0]
    assert sdk.gradient(lambda x: dd.sum(x * x), x=[1.0, 3.0]).gradient["x"].tolist() == [2.0, 6.0]


def test_a_none_or_non_numeric_input_names_the_input(sdk):
    with pytest.raises(TypeError, match="input 'x' is None"):
        sdk.gradient("sum(x**2)", x=None)
    with pytest.raises(TypeError, match="constant 'w' is None"):
        sdk.gradient("sum(w * x)", x=[1.0], constants={"w": None})
    with pytest.raises(TypeError, match="input 'x': expected numbers"):
        sdk.gradient("sum(x**2)", at={"x": ["a"]})


def test_a_sparse_jacobian_becomes_scipy_sparse_with_the_right_entries(sdk):
    def f(x):
        return np.array([x[0] * x[1], np.sin(x[2]), x[3] ** 2 + x[0]])

    x = np.array([0.5, -1.0, 0.3, 2.0])
    r = sdk.jacobian("[x[0] * x[1], sin(x[2]), x[3]**2 + x[0]]", x=x, sparse=True)
    coo, csr = r.jacobian.to_scipy(), r.jacobian.tocsr()
    assert isinstance(coo, scipy.sparse.coo_matrix) and isinstance(csr, scipy.sparse.csr_matrix)
    assert csr.shape == (3, 4) and csr.nnz == 5
    np.testing.assert_allclose(csr.toarray(), fd_jacobian(f, {"x": x}), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(coo.toarray(), r.jacobian.toarray())


def test_counts_arrive_as_ints(sdk):
    r = sdk.jacobian("[x[0] * x[1], sin(x[2])]", x=[0.5, -1.0, 0.3], sparse=True)
    assert type(r.sparsity["nnz"]) is int and r.sparsity["nnz"] == 3
    assert type(r.sparsity["colors"]) is int
    g = sdk.gradient("sum(x**2)", x=[1.0, 2.0], mode="finite")
    assert type(g.fd["evaluations"]) is int and g.fd["evaluations"] > 0
    assert type(g.fd["max_error_estimate"]) is float


def test_a_stored_function_lists_its_inputs_in_source_order(sdk):
    assert sdk.register_function("sum(y * (w @ X))").inputs == ["y", "w", "X"]
    program = "def f(q): return q * zeta\nb = alpha + f(m)\nsum(b * omega)"
    assert sdk.register_function(program).inputs == ["zeta", "alpha", "m", "omega"]
