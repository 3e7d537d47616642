"""Every endpoint over real HTTP, both encodings, against analytic derivatives."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.references import ROSENBROCK, rosenbrock_gradient

F = "[x[0]*sin(x[1]), exp(x[0]) + x[1]**2]"


def analytic_jacobian(x):
    return np.array([[np.sin(x[1]), x[0] * np.cos(x[1])], [np.exp(x[0]), 2 * x[1]]])


def b64(arr):
    arr = np.asarray(arr, dtype="<f8")
    return {"dtype": "float64", "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def unb64(v):
    return np.frombuffer(base64.b64decode(v["data"]), dtype="<f8").reshape(v["shape"])


@pytest.mark.parametrize("path", ["/v1/jacobian", "/jacobian"])
@pytest.mark.parametrize("mode", ["auto", "forward", "reverse"])
def test_jacobian_matches_analytic(client, path, mode):
    x = np.array([1.0, 2.0])
    r = client.post(path, json={"function": {"dsl": F}, "at": {"x": x.tolist()}, "mode": mode})
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["jacobian"], analytic_jacobian(x), rtol=1e-15)
    assert body["shape"] == [2, 2]
    assert body["engine"] == ("forward" if mode == "auto" else mode)
    timing = r.headers["server-timing"]
    assert all(k in timing for k in ("compile;dur=", "queue;dur=", "compute;dur="))


def test_jacobian_base64_both_ways(client):
    x = np.array([0.3, -1.2])
    r = client.post("/v1/jacobian", json={"function": {"dsl": F}, "at": {"x": b64(x)}, "encoding": "base64"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(unb64(r.json()["jacobian"]), analytic_jacobian(x), rtol=1e-15)


def test_evaluate_keeps_shape(client):
    r = client.post("/v1/evaluate", json={"function": {"dsl": "A @ x"}, "at": {"A": [[1, 2], [3, 4]], "x": [1, 1]}})
    assert r.json()["value"] == [3.0, 7.0]
    r = client.post("/v1/evaluate", json={"function": {"dsl": "A.T * 2"}, "at": {"A": [[1, 2], [3, 4]]}})
    assert r.json()["value"] == [[2.0, 6.0], [4.0, 8.0]]


def test_gradient_rosenbrock(client):
    x = np.array([1.2, 0.5, -0.3, 2.0])
    r = client.post("/v1/gradient", json={"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}})
    body = r.json()
    np.testing.assert_allclose(body["gradient"]["x"], rosenbrock_gradient(x), rtol=1e-14)
    assert body["engine"] == "reverse"


def test_gradient_shaped_like_inputs_and_wrt(client):
    r = client.post("/v1/gradient", json={
        "function": {"dsl": "sum(W * W) * b"}, "at": {"W": [[1, 2], [3, 4]], "b": 2.0}, "wrt": ["W"]})
    body = r.json()
    assert list(body["gradient"]) == ["W"]
    np.testing.assert_allclose(body["gradient"]["W"], 4 * np.array([[1, 2], [3, 4]]))


def test_jvp_and_vjp(client):
    x, v, u = np.array([0.7, 1.9]), np.array([0.5, -2.0]), np.array([3.0, -1.0])
    J = analytic_jacobian(x)
    r = client.post("/v1/jvp", json={"function": {"dsl": F}, "at": {"x": x.tolist()}, "v": {"x": v.tolist()}})
    np.testing.assert_allclose(r.json()["jvp"], J @ v, rtol=1e-14)
    r = client.post("/v1/vjp", json={"function": {"dsl": F}, "at": {"x": x.tolist()}, "u": u.tolist()})
    np.testing.assert_allclose(r.json()["vjp"]["x"], u @ J, rtol=1e-14)


def test_constants_are_not_differentiated(client):
    r = client.post("/v1/gradient", json={
        "function": {"dsl": "sum(x[idx] * c)"}, "at": {"x": [1.0, 2.0, 3.0]},
        "constants": {"idx": [0, 2, 2], "c": 2.0}})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["gradient"]["x"], [2.0, 0.0, 4.0])


def test_functions_roundtrip(client):
    r = client.post("/v1/functions", json={"dsl": "sum(a * x)", "constants": {"a": [1, 2]}})
    assert r.status_code == 200, r.text
    fid, inputs = r.json()["id"], r.json()["inputs"]
    assert sorted(inputs) == ["a", "x"]
    got = client.get(f"/v1/functions/{fid}").json()
    assert got["dsl"] == "sum(a * x)"
    r = client.post("/v1/gradient", json={"function": {"id": fid}, "at": {"x": [5.0, 6.0]}})
    np.testing.assert_allclose(r.json()["gradient"]["x"], [1.0, 2.0])


def test_nonfinite_values_are_strings_not_null(client):
    r = client.post("/v1/evaluate", json={"function": {"dsl": "log(x)"}, "at": {"x": [0.0, -1.0, 1.0]}})
    assert r.json()["value"] == ["-Infinity", "NaN", 0.0]


def test_health(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs").status_code == 200
    assert "/v1/jacobian" in client.get("/openapi.json").json()["paths"]
