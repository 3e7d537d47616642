"""Hessian-vector products and Hessians (engines/forward_over_reverse.py, core ``hvp``/``hessian``).

References are independent of the engine: closed-form Hessians (extended Rosenbrock,
a quadratic form, a Gaussian-mixture log-density), and central differences of the
closed-form gradient along v (8th order, error far below the tolerances used).
Over HTTP: the contract's fields, the ``vs`` extension, the ``sparse`` Hessian and errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd.config import Settings
from derivd.core import Request, Service
from derivd.errors import LimitExceeded
from tests.references import central_difference, fd_jacobian, rosenbrock_gradient, rosenbrock_hessian

ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"
GMM = "logsumexp(logw - 0.5 * sum((x - M)**2, axis=1))"
QUADRATIC = "0.5 * (x @ (A @ x)) + b @ x"


def central(g, x, v, h=1e-3):
    """d/dt g(x + t v) at 0, 8th-order central difference."""
    return central_difference(lambda t: g(x + t * v), h)


def gmm_parts(x, logw, means):
    a = logw - 0.5 * ((x - means) ** 2).sum(axis=1)
    r = np.exp(a - a.max())
    r /= r.sum()
    d = means - x  # ∇a_k
    g = r @ d
    return g, -np.eye(x.size) + (d.T * r) @ d - np.outer(g, g)


@pytest.fixture(scope="module")
def service():
    return Service(Settings())


def call(service, endpoint, **kw):
    return service.compute(endpoint, Request(**kw))[0]


points = st.integers(0, 2**32 - 1)


@settings(max_examples=15, deadline=None)
@given(points, st.integers(2, 12))
def test_rosenbrock_hvp_and_hessian_match_closed_forms(service, seed, n):
    rng = np.random.default_rng(seed)
    x, v = rng.uniform(-2, 2, n), rng.standard_normal(n)
    r = call(service, "hvp", function={"dsl": ROSENBROCK}, at={"x": x}, v={"x": v})
    assert r["engine"] == "forward-over-reverse"
    scale = np.abs(rosenbrock_hessian(x)).max() * np.abs(v).max()
    np.testing.assert_allclose(r["hvp"]["x"], rosenbrock_hessian(x) @ v, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(r["hvp"]["x"], central(rosenbrock_gradient, x, v), rtol=1e-7, atol=1e-7 * scale)
    h = call(service, "hessian", function={"dsl": ROSENBROCK}, at={"x": x})
    np.testing.assert_allclose(h["hessian"], rosenbrock_hessian(x), rtol=1e-13, atol=1e-13 * scale)
    np.testing.assert_allclose(h["gradient"]["x"], rosenbrock_gradient(x), rtol=1e-13, atol=1e-10)


@settings(max_examples=10, deadline=None)
@given(points, st.integers(1, 9))
def test_quadratic_form_hessian_is_the_symmetric_part(service, seed, n):
    rng = np.random.default_rng(seed)
    a, b, x = rng.standard_normal((n, n)), rng.standard_normal(n), rng.standard_normal(n)
    r = call(service, "hessian", function={"dsl": QUADRATIC}, at={"x": x}, constants={"A": a, "b": b})
    np.testing.assert_allclose(r["hessian"], 0.5 * (a + a.T), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(r["gradient"]["x"], 0.5 * (a + a.T) @ x + b, rtol=1e-12, atol=1e-12)
    assert r["value"] == pytest.approx(0.5 * x @ a @ x + b @ x, rel=1e-12, abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(points, st.integers(1, 5), st.integers(1, 4))
def test_gaussian_mixture_log_density_hessian(service, seed, d, k):
    rng = np.random.default_rng(seed)
    x, means = rng.standard_normal(d), rng.standard_normal((k, d))
    logw = np.log(rng.dirichlet(np.ones(k)))
    g, hess = gmm_parts(x, logw, means)
    r = call(service, "hessian", function={"dsl": GMM}, at={"x": x}, constants={"M": means, "logw": logw})
    np.testing.assert_allclose(r["hessian"], hess, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(r["gradient"]["x"], g, rtol=1e-12, atol=1e-13)
    v = rng.standard_normal(d)
    hv = call(service, "hvp", function={"dsl": GMM}, at={"x": x}, constants={"M": means, "logw": logw},
              v={"x": v})["hvp"]["x"]
    np.testing.assert_allclose(hv, central(lambda z: gmm_parts(z, logw, means)[0], x, v), rtol=1e-7, atol=1e-8)


MIXED = "sum(sin(x) * exp(y[:3] * x)) + log1p(sum(y**2)) * prod(x[:2]) + logsumexp(x * y[1:])"


def test_several_inputs_wrt_and_symmetry(service):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal(3), rng.standard_normal(4)
    full = call(service, "hessian", function={"dsl": MIXED}, at={"x": x, "y": y})["hessian"]
    assert full.shape == (7, 7)
    np.testing.assert_allclose(full, full.T, rtol=0, atol=1e-13 * np.abs(full).max())
    only_y = call(service, "hessian", function={"dsl": MIXED}, at={"x": x, "y": y}, wrt=["y"])
    np.testing.assert_allclose(only_y["hessian"], full[3:, 3:], rtol=1e-14, atol=1e-15)
    assert list(only_y["gradient"]) == ["y"]
    # each column is the HVP of a unit vector, checked against differences of the gradient
    grad = lambda z: np.concatenate(list(call(service, "gradient", function={"dsl": MIXED},  # noqa: E731
                                                at={"x": z[:3], "y": z[3:]})["gradient"].values()))
    z, e = np.concatenate([x, y]), np.eye(7)
    for j in (0, 4):
        np.testing.assert_allclose(full[:, j], central(grad, z, e[j]), rtol=1e-7, atol=1e-8)


def test_vs_in_one_pass_equals_separate_calls(service):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(3), rng.standard_normal(4)
    vs = [{"x": rng.standard_normal(3), "y": rng.standard_normal(4)} for _ in range(5)]
    batch = call(service, "hvp", function={"dsl": MIXED}, at={"x": x, "y": y}, vs=vs)
    assert len(batch["hvps"]) == 5 and "hvp" not in batch
    for v, got in zip(vs, batch["hvps"]):
        one = call(service, "hvp", function={"dsl": MIXED}, at={"x": x, "y": y}, v=v)["hvp"]
        for name in ("x", "y"):
            np.testing.assert_allclose(got[name], one[name], rtol=1e-13, atol=1e-14)


def test_hessian_in_chunks_equals_one_pass():
    small = Service(Settings(forward_chunk_bytes=200))  # a few seeds per pass, last chunk padded
    x = np.random.default_rng(5).uniform(-1, 1, 9)
    chunked = call(small, "hessian", function={"dsl": ROSENBROCK}, at={"x": x}, mode="forward")["hessian"]
    np.testing.assert_allclose(chunked, rosenbrock_hessian(x), rtol=1e-13, atol=1e-12)


def test_hessian_over_the_entry_limit_is_refused():
    small = Service(Settings(max_jacobian_entries=50))
    with pytest.raises(LimitExceeded) as err:
        call(small, "hessian", function={"dsl": "sum(x**3)"}, at={"x": np.ones(8)})
    assert err.value.status == 413 and err.value.detail["limit"] == "max_jacobian_entries"


# ---------------------------------------------------------------- over HTTP


def test_http_hvp_and_hessian(client):
    x = [1.2, 0.5, -0.3, 2.0]
    r = client.post("/v1/hvp", json={"function": {"dsl": ROSENBROCK}, "at": {"x": x}, "v": {"x": [1, 0, 0, 1]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["engine"] == "forward-over-reverse"
    np.testing.assert_allclose(body["hvp"]["x"], rosenbrock_hessian(np.array(x)) @ [1, 0, 0, 1], rtol=1e-13)
    assert body["value"] == pytest.approx(sum(100 * (b - a * a) ** 2 + (1 - a) ** 2 for a, b in zip(x, x[1:])))
    assert "compute;dur=" in r.headers["server-timing"]
    r = client.post("/hvp", json={"function": {"dsl": ROSENBROCK}, "at": {"x": x},
                                  "vs": [{"x": [1, 0, 0, 0]}, {"x": [0, 0, 1, 0]}]})
    assert r.status_code == 200, r.text
    hv = [h["x"] for h in r.json()["hvps"]]
    np.testing.assert_allclose(hv, rosenbrock_hessian(np.array(x))[[0, 2]], rtol=1e-13)
    r = client.post("/v1/hessian", json={"function": {"dsl": ROSENBROCK}, "at": {"x": x}})
    body = r.json()
    np.testing.assert_allclose(body["hessian"], rosenbrock_hessian(np.array(x)), rtol=1e-13)
    np.testing.assert_allclose(body["gradient"]["x"], rosenbrock_gradient(np.array(x)), rtol=1e-13)
    assert body["engine"] == "forward-over-reverse"


def test_http_sparse_hessian_is_coo_on_the_pattern(client):
    x = np.random.default_rng(2).uniform(-1, 1, 30)
    r = client.post("/v1/hessian", json={"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}, "sparse": True})
    assert r.status_code == 200, r.text
    body = r.json()
    coo = body["hessian"]
    assert coo["shape"] == [30, 30] and len(coo["rows"]) == 30 + 2 * 29 == body["sparsity"]["nnz"]
    assert body["sparsity"]["colors"] == 3
    dense = np.zeros((30, 30))
    dense[coo["rows"], coo["cols"]] = coo["values"]
    np.testing.assert_allclose(dense, rosenbrock_hessian(x), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("body, status, code", [
    ({"function": {"dsl": "x * 2"}, "at": {"x": [1.0, 2.0]}, "v": {"x": [1, 0]}}, 400, "not_scalar"),
    ({"function": {"dsl": "sum(x**3)"}, "at": {"x": [1.0, 2.0]}}, 422, "invalid_request"),
    ({"function": {"dsl": "sum(x**3)"}, "at": {"x": [1.0, 2.0]}, "v": {"x": [1, 0, 0]}}, 400, "shape_mismatch"),
    ({"function": {"dsl": "sum(x**3)"}, "at": {"x": [1.0, 2.0]}, "v": {"x": [1, 0]}, "vs": [{"x": [1, 0]}]},
     422, "invalid_request"),
    ({"function": {"dsl": "sum(x**3)"}, "at": {"x": [1.0, 2.0]}, "v": {"z": [1, 0]}}, 422, "invalid_request"),
])
def test_http_hvp_errors_name_what_is_wrong(client, body, status, code):
    r = client.post("/v1/hvp", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_http_hessian_of_a_vector_output_is_refused(client):
    r = client.post("/v1/hessian", json={"function": {"dsl": "[x[0], x[1]]"}, "at": {"x": [1.0, 2.0]}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_scalar"
    assert r.json()["error"]["detail"]["shape"] == [2]


def test_many_hvp_directions_run_in_blocks_of_bounded_memory(monkeypatch):
    """``vs`` is the caller's to size: its directions go through in passes of at most
    forward_chunk_bytes of tangents, never one pass as wide as the request."""
    from derivd.engines.function import CompiledFunction

    runs = []
    original = CompiledFunction.run

    def recording(self, tape, values, *extra):
        runs.append(max((np.shape(e)[0] for e in extra if np.ndim(e) == 2), default=1))
        return original(self, tape, values, *extra)

    monkeypatch.setattr(CompiledFunction, "run", recording)
    x = np.linspace(-1.0, 1.0, 30)
    vs = np.random.default_rng(3).normal(size=(25, 30))
    service = Service(Settings(forward_chunk_bytes=8 * 30 * 30 * 4 * 4))  # four directions per pass
    out, _ = service.compute("hvp", Request(function={"dsl": "sum(outer(x, x) ** 2)"}, at={"x": x},
                                            vs=[{"x": v} for v in vs]))
    hessian = 4 * (np.sum(x ** 2) * np.eye(30) + 2 * np.outer(x, x))
    np.testing.assert_allclose([h["x"] for h in out["hvps"]], vs @ hessian, rtol=1e-12, atol=1e-12)
    assert len(runs) == 7 and max(runs) == 4  # ceil(25 / 4) passes of 4


def test_a_loop_program_hessian_sizes_its_passes_by_the_states_the_loop_keeps():
    """Reverse over a loop keeps every iteration's state: a pass of b directions holds
    count x b x state. Batches are sized by that, so this Hessian fits a 1 MiB intermediate limit
    (sized by the state alone, 50 directions at once would need 20 MB). 1000 iterations: a loop
    node, not unrolled."""
    dsl = "s = x\nfor i in range(1000):\n    s = sin(s) * 0.5 + x\nsum(s)"
    small = Settings(max_intermediate_bytes=2**20, forward_chunk_bytes=2**20)
    x = np.linspace(-1.0, 1.0, 50)
    hess = np.asarray(Service(small).compute("hessian", Request(function={"dsl": dsl}, at={"x": x}))[0]["hessian"])
    reference = Service(Settings())

    def gradient(at):
        return reference.compute("gradient", Request(function={"dsl": dsl}, at={"x": at}))[0]["gradient"]["x"]

    fd = fd_jacobian(gradient, {"at": x})
    np.testing.assert_allclose(hess, fd, rtol=1e-6, atol=1e-8)
