"""The Taylor engine: derivative tensors by interpolation, second and first order from
univariate series, and its endpoints over real HTTP.

References: analytic derivatives, mixed partials from nested forward mode (the
jvp transform applied e times with e different directions), Hessians from
forward over reverse (jvp of the vjp graph) and central differences of an
analytic gradient.
"""

from __future__ import annotations

import base64
import math
from itertools import combinations_with_replacement, permutations

import numpy as np
import pytest

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.dsl import InputSpec
from derivd.engines import taylor
from derivd.engines.function import CompiledFunction
from derivd.errors import LimitExceeded, ShapeError
from derivd.transforms import jvp, vjp
from tests.references import fd_jacobian, rosenbrock_gradient, rosenbrock_hessian

SETTINGS = Settings()
ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"


def compiled(source, **shapes):
    return CompiledFunction(source, {n: InputSpec(tuple(s), "f8", "at") for n, s in shapes.items()}, SETTINGS)


def mixed_partials(fn, name, order):
    """A function (x, [u_1..u_order]) -> [D^e f[u_1..u_e] for e = 1..order], by nested jvp."""
    g, x = fn.graph, fn.input_node(name)
    us = [g.input(f"__u{e}", x.shape, "f8", "extra") for e in range(order)]
    outs, node = [], fn.output
    for e in range(order):
        (node,) = jvp(g, [x], [us[e]], [node])
        outs.append(node)
    tape = compile_graph(g, [x] + us, outs)
    return lambda x0, u: [np.asarray(o) for o in tape.run(x0, *u)]


def contract(tensor, us):
    """T[..., u_1, ..., u_e]: the tensor's last e axes contracted with the directions."""
    for u in reversed(us):
        tensor = tensor @ u
    return tensor


# ---------------------------------------------------------------- interpolation weights alone


@pytest.mark.parametrize("n,d", [(1, 4), (2, 2), (3, 3), (4, 4), (5, 2)])
def test_interpolation_recovers_every_tensor_of_a_polynomial(n, d):
    """Without any AD: the Taylor coefficients of a polynomial along direction j are the
    homogeneous parts evaluated at j, so the weights must return its exact derivatives."""
    rng = np.random.default_rng(n * 10 + d)
    plan = taylor._plan(n, d)
    for e in range(1, d + 1):
        raw = rng.normal(size=(n,) * e)
        tensor = sum(np.transpose(raw, perm) for perm in permutations(range(e)))  # symmetric, as derivatives are
        c_e = np.array([contract(tensor, [j] * e) / math.factorial(e) for j in plan.lattice])
        rows, cols, weights, entry_rows = plan.orders[e - 1]
        derivs = np.zeros(int(entry_rows.max()) + 1)
        np.add.at(derivs, rows, weights * c_e[cols])
        np.testing.assert_allclose(derivs[entry_rows].reshape((n,) * e), tensor, rtol=1e-11, atol=1e-11)
    assert len(plan.lattice) == math.comb(n + d - 1, d)


# ---------------------------------------------------------------- tensors against nested forward mode


@pytest.mark.parametrize("source", [
    "sum(exp(sin(x)) * log1p(x**2)) + x[0] * x[1] * x[2]**2",
    "logsumexp(x * x[::-1]) + atan(prod(x))",
])
def test_scalar_tensors_match_mixed_partials_of_nested_jvp(source):
    fn = compiled(source, x=(3,))
    x0 = np.array([0.3, -0.7, 0.5])
    y, tensors, count, _ = taylor.tensors(fn, {"x": x0}, ["x"], 4, SETTINGS)
    assert count == math.comb(3 + 4 - 1, 4)
    assert [t.shape for t in tensors] == [(3,), (3, 3), (3, 3, 3), (3, 3, 3, 3)]
    reference = mixed_partials(fn, "x", 4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        us = list(rng.normal(size=(4, 3)))
        want = reference(x0, us)
        for e in range(1, 5):
            np.testing.assert_allclose(contract(tensors[e - 1], us[:e]), want[e - 1], rtol=1e-9, atol=1e-9)


def test_vector_output_tensors_and_symmetry():
    fn = compiled("[sin(x[0] * x[1]), exp(x[1]) * x[0]**2, x[0] / (2 + x[1])]", x=(2,))
    x0 = np.array([0.4, 1.1])
    _, tensors, _, _ = taylor.tensors(fn, {"x": x0}, ["x"], 3, SETTINGS)
    assert [t.shape for t in tensors] == [(3, 2), (3, 2, 2), (3, 2, 2, 2)]
    a, b = x0
    np.testing.assert_allclose(tensors[0], [[b * np.cos(a * b), a * np.cos(a * b)],
                                            [2 * a * np.exp(b), a * a * np.exp(b)],
                                            [1 / (2 + b), -a / (2 + b) ** 2]], rtol=1e-12)
    h1 = [[-b * b * np.sin(a * b), np.cos(a * b) - a * b * np.sin(a * b)],
          [np.cos(a * b) - a * b * np.sin(a * b), -a * a * np.sin(a * b)]]
    np.testing.assert_allclose(tensors[1][0], h1, rtol=1e-11)
    np.testing.assert_allclose(tensors[2][2, 1, 1, 1], -6 * a / (2 + b) ** 4, rtol=1e-10)
    np.testing.assert_array_equal(tensors[2], np.transpose(tensors[2], (0, 2, 1, 3)))


def test_tensors_with_respect_to_several_inputs_in_wrt_order():
    fn = compiled("sum(a * b**2) * c", a=(2,), b=(2,), c=())
    values = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 4.0]), "c": np.array(0.5)}
    _, (g, h), _, _ = taylor.tensors(fn, values, ["c", "b"], 2, SETTINGS)
    a, b, c = values["a"], values["b"], values["c"]
    np.testing.assert_allclose(g, np.concatenate([[np.sum(a * b * b)], 2 * a * b * c]), rtol=1e-13)
    np.testing.assert_allclose(h, [[0, 2 * a[0] * b[0], 2 * a[1] * b[1]],
                                   [2 * a[0] * b[0], 2 * a[0] * c, 0],
                                   [2 * a[1] * b[1], 0, 2 * a[1] * c]], atol=1e-12)


# ---------------------------------------------------------------- second and first order


def forward_over_reverse_hessian(fn, n):
    """H by the jvp transform of the vjp graph, with a batch of unit tangents."""
    g, x = fn.graph, fn.input_node("x")
    (grad,) = vjp(g, [x], [fn.output], [g.const(1.0)])
    eye = g.input("__eye", (n, n), "f8", "extra")
    (h,) = jvp(g, [x], [eye], [grad])
    tape = compile_graph(g, [x, eye], [h])
    return lambda x0: np.asarray(tape.run(x0, np.eye(n))[0])


def test_hessian_matches_analytic_forward_over_reverse_and_finite_differences():
    x0 = np.array([1.2, 0.5, -0.3, 2.0, 0.1])
    fn = compiled(ROSENBROCK, x=(5,))
    y, g, h, _ = taylor.hessian(fn, {"x": x0}, ["x"], SETTINGS)
    np.testing.assert_allclose(g, rosenbrock_gradient(x0), rtol=1e-13)
    np.testing.assert_allclose(h, rosenbrock_hessian(x0), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(h, forward_over_reverse_hessian(fn, 5)(x0), rtol=1e-12, atol=1e-10)
    fd = fd_jacobian(rosenbrock_gradient, {"x": x0})
    np.testing.assert_allclose(h, fd, rtol=1e-7, atol=1e-5)


def test_hvps_by_polarisation_match_the_hessian():
    x0 = np.array([1.2, 0.5, -0.3, 2.0])
    vs = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [1e-3, 0.0, 2e-3, 0.0]])
    fn = compiled(ROSENBROCK, x=(4,))
    y, hv, _ = taylor.hvps(fn, {"x": x0}, ["x"], vs, SETTINGS)
    want = vs @ rosenbrock_hessian(x0)
    np.testing.assert_allclose(hv, want, rtol=1e-11, atol=1e-12 * np.abs(want).max())


def test_first_order_is_the_jacobian():
    fn = compiled("[x[0] * sin(x[1]), exp(x[0]) + x[1]**2, x[0]]", x=(2,))
    x0 = np.array([0.7, 1.9])
    _, jac, _ = taylor.jacobian(fn, {"x": x0}, ["x"], SETTINGS)
    want = [[np.sin(x0[1]), x0[0] * np.cos(x0[1])], [np.exp(x0[0]), 2 * x0[1]], [1.0, 0.0]]
    np.testing.assert_allclose(jac, want, rtol=1e-15)


def test_directions_are_chunked_to_the_memory_budget():
    """A budget that admits one direction per pass gives the same tensors as one pass."""
    fn = compiled("sum(sin(x) * x[::-1])", x=(4,))
    x0 = np.array([0.1, 0.2, 0.3, 0.4])
    _, whole, _, _ = taylor.tensors(fn, {"x": x0}, ["x"], 3, SETTINGS)
    _, chunked, _, _ = taylor.tensors(fn, {"x": x0}, ["x"], 3, Settings(forward_chunk_bytes=1))
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_too_many_directions_and_too_high_an_order_are_refused():
    fn = compiled("sum(x**3)", x=(30,))
    with pytest.raises(LimitExceeded, match="max_taylor_directions") as e:
        taylor.tensors(fn, {"x": np.ones(30)}, ["x"], 4, SETTINGS)
    assert e.value.detail["value"] == math.comb(33, 4)
    with pytest.raises(LimitExceeded, match="max_tensor_entries"):
        taylor.tensors(fn, {"x": np.ones(30)}, ["x"], 3, Settings(max_tensor_entries=1000))
    with pytest.raises(ShapeError, match="orders 1 to 4"):
        taylor.tensors(fn, {"x": np.ones(30)}, ["x"], 5, SETTINGS)


# ---------------------------------------------------------------- over HTTP


def b64(arr):
    arr = np.asarray(arr, dtype="<f8")
    return {"dtype": "float64", "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def unb64(v):
    return np.frombuffer(base64.b64decode(v["data"]), dtype="<f8").reshape(v["shape"])


def test_taylor_endpoint_coefficients_and_derivatives(client):
    """f = sum(exp(x)) + x0 x1 along v: c_k = sum(e^x v^k) / k! plus the product's two terms."""
    x, v, order = np.array([0.2, -0.4, 1.1]), np.array([1.5, 0.5, -1.0]), 9
    r = client.post("/v1/taylor", json={"function": {"dsl": "sum(exp(x)) + x[0] * x[1]"}, "at": {"x": x.tolist()},
                                        "v": {"x": v.tolist()}, "order": order})
    assert r.status_code == 200, r.text
    body = r.json()
    want = np.array([np.sum(np.exp(x) * v**k) / math.factorial(k) for k in range(order + 1)])
    want[:3] += [x[0] * x[1], x[0] * v[1] + x[1] * v[0], v[0] * v[1]]
    np.testing.assert_allclose(np.array(body["coefficients"])[:, 0], want, rtol=1e-14)
    factorials = np.array([math.factorial(k) for k in range(order + 1)])
    np.testing.assert_allclose(np.array(body["derivatives"])[:, 0], want * factorials, rtol=1e-14)
    assert body["engine"] == "taylor" and body["value"] == [pytest.approx(want[0], rel=1e-15)]
    assert "compute;dur=" in r.headers["server-timing"]


def test_taylor_endpoint_vector_output_wrt_and_base64(client):
    x, c = np.array([0.5, 2.0]), np.array([3.0, -1.0])
    r = client.post("/v1/taylor", json={
        "function": {"dsl": "sin(a * x) / c"}, "at": {"x": b64(x), "a": 2.0}, "constants": {"c": c.tolist()},
        "wrt": ["x"], "v": {"x": b64([1.0, -1.0])}, "order": 3, "encoding": "base64"})
    assert r.status_code == 200, r.text
    got = unb64(r.json()["coefficients"])
    d = np.array([1.0, -1.0])
    want = np.array([np.sin(2 * x + k * np.pi / 2) * (2 * d) ** k / math.factorial(k) / c for k in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


def test_taylor_order_zero_is_the_value(client):
    r = client.post("/v1/taylor", json={"function": {"dsl": "x * 2"}, "at": {"x": [1.0, 2.0]},
                                        "v": {"x": [1.0, 1.0]}, "order": 0})
    assert r.json()["coefficients"] == [[2.0, 4.0]]


def test_taylor_order_over_the_limit_is_413_naming_it(client):
    r = client.post("/v1/taylor", json={"function": {"dsl": "exp(x)"}, "at": {"x": 1.0}, "v": {"x": 1.0},
                                        "order": 65})
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "limit_exceeded" and error["detail"]["limit"] == "max_taylor_order"
    assert error["detail"] == {"limit": "max_taylor_order", "value": 65, "max": 64}


@pytest.mark.parametrize("body,status,field", [
    ({"at": {"x": [1.0, 2.0]}, "order": 2}, 422, "v"),
    ({"at": {"x": [1.0, 2.0]}, "v": {"x": [1.0]}, "order": 2}, 400, None),
    ({"at": {"x": [1.0, 2.0]}, "v": {"x": [1.0, 1.0]}, "order": -1}, 422, "order"),
    ({"at": {"x": [1.0, 2.0]}, "v": {"y": [1.0, 1.0]}, "order": 2}, 422, "v"),
])
def test_taylor_bad_requests_are_4xx_with_the_contract_body(client, body, status, field):
    r = client.post("/v1/taylor", json={"function": {"dsl": "sum(x**2)"}, **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "detail"}
    if field:
        assert field in error["detail"].get("field", "") or field in error["message"]
    else:
        assert error["code"] == "shape_mismatch" and error["detail"]["shapes"] == [[1], [2]]


def test_derivatives_endpoint(client):
    x = np.array([0.3, 0.5])
    r = client.post("/v1/derivatives", json={"function": {"dsl": "x[0]**2 * x[1] + sin(x[1])"},
                                             "at": {"x": x.tolist()}, "order": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["engine"] == "taylor" and body["directions"] == math.comb(4, 3)
    g, h, t = (np.array(a) for a in body["tensors"])
    np.testing.assert_allclose(g, [2 * x[0] * x[1], x[0] ** 2 + np.cos(x[1])], rtol=1e-14)
    np.testing.assert_allclose(h, [[2 * x[1], 2 * x[0]], [2 * x[0], -np.sin(x[1])]], rtol=1e-14)
    want = np.zeros((2, 2, 2))
    for i, j, k in [(0, 0, 1), (0, 1, 0), (1, 0, 0)]:
        want[i, j, k] = 2.0
    want[1, 1, 1] = -np.cos(x[1])
    np.testing.assert_allclose(t, want, rtol=1e-13, atol=1e-13)


def test_derivatives_endpoint_refuses_what_it_cannot_do(client):
    many = {"function": {"dsl": "sum(x**4)"}, "at": {"x": [0.1] * 60}, "order": 4}
    r = client.post("/v1/derivatives", json=many)
    assert r.status_code == 413 and r.json()["error"]["detail"]["limit"] == "max_taylor_directions"
    r = client.post("/v1/derivatives", json={**many, "order": 5})
    assert r.status_code == 422 and "order" in r.json()["error"]["message"]
    schema = client.get("/openapi.json").json()
    assert "/v1/derivatives" in schema["paths"]
    assert "Griewank" in schema["components"]["schemas"]["DerivativesRequest"]["description"]


@pytest.mark.parametrize("endpoint", ["gradient", "jacobian", "hessian", "hvp", "jvp"])
def test_mode_taylor_on_first_and_second_order_endpoints(client, endpoint):
    x, v = np.array([1.2, 0.5, -0.3]), np.array([0.5, -1.0, 2.0])
    body = {"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}, "mode": "taylor"}
    if endpoint in ("hvp", "jvp"):
        body["v"] = {"x": v.tolist()}
    r = client.post(f"/v1/{endpoint}", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["engine"] == "taylor"
    g, h = rosenbrock_gradient(x), rosenbrock_hessian(x)
    if endpoint == "gradient":
        np.testing.assert_allclose(out["gradient"]["x"], g, rtol=1e-14)
    elif endpoint == "jacobian":
        np.testing.assert_allclose(out["jacobian"], [g], rtol=1e-14)
    elif endpoint == "jvp":
        np.testing.assert_allclose(out["jvp"], [g @ v], rtol=1e-14)
    elif endpoint == "hvp":
        np.testing.assert_allclose(out["hvp"]["x"], h @ v, rtol=1e-12)
    else:
        np.testing.assert_allclose(out["hessian"], h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["gradient"]["x"], g, rtol=1e-14)


def test_mode_taylor_hvp_with_many_directions(client):
    x, vs = np.array([1.2, 0.5, -0.3]), np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]])
    r = client.post("/v1/hvp", json={"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}, "mode": "taylor",
                                     "vs": [{"x": v.tolist()} for v in vs]})
    assert r.status_code == 200, r.text
    got = np.array([h["x"] for h in r.json()["hvps"]])
    np.testing.assert_allclose(got, vs @ rosenbrock_hessian(x), rtol=1e-12)


def test_differentiating_a_taylor_program_is_a_loud_error():
    """The taylor_* helper primitives have no rules: the jvp of a Taylor graph raises, naming one."""
    from derivd.errors import NoDerivativeRule
    from derivd.transforms.taylor import taylor as taylor_transform

    fn = compiled("exp(sin(x))", x=(2,))
    g, x = fn.graph, fn.input_node("x")
    (series,) = taylor_transform(g, [x], [g.input("__s", (3, 2), "f8", "extra")], [fn.output])
    with pytest.raises(NoDerivativeRule, match="taylor_"):
        jvp(g, [x], [g.input("__t", (2,), "f8", "extra")], [series])


def test_lattice_is_every_direction_of_degree_d():
    plan = taylor._plan(3, 2)
    want = sorted(tuple(np.bincount(c, minlength=3)) for c in combinations_with_replacement(range(3), 2))
    assert sorted(tuple(int(v) for v in row) for row in plan.lattice) == want
