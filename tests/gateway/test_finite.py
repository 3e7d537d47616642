"""Finite differences behind the endpoints: mode "finite", verify, and black boxes over real HTTP."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from derivd.config import Settings
from tests.conftest import LiveServer
from tests.references import fd_jacobian
from tests.support import BlackBoxServer

F = "sum(x**2) * prod(sin(x))"


def f_grad(x):
    s, p = np.sum(x**2), np.prod(np.sin(x))
    return 2 * x * p + s * p / np.tan(x)


def f_hess(x):
    """A separate reference: central differences of the analytic gradient."""
    return fd_jacobian(f_grad, {"x": x})


@pytest.fixture(scope="module")
def blackbox():
    server = BlackBoxServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def local(blackbox):
    """A gateway whose allow-list admits 127.0.0.1 (as in local development), with a black box beside it."""
    settings = Settings(blackbox_allow=["127.0.0.1/32"], blackbox_deny=[], blackbox_backoff_s=0.01)
    with LiveServer(settings) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        yield c


X = [0.3, 0.7, 1.1]


def test_finite_mode_gradient_is_accurate(client):
    r = client.post("/v1/gradient", json={"function": {"dsl": F}, "at": {"x": X}, "mode": "finite"})
    body = r.json()
    assert body["engine"] == "finite"
    np.testing.assert_allclose(body["gradient"]["x"], f_grad(np.array(X)), rtol=1e-9)
    assert body["fd"]["evaluations"] >= 2 * len(X)


def test_finite_mode_high_order_reaches_1e12(client):
    r = client.post("/v1/gradient", json={"function": {"dsl": F}, "at": {"x": X}, "mode": "finite",
                                          "fd": {"method": "central", "order": 8}})
    np.testing.assert_allclose(r.json()["gradient"]["x"], f_grad(np.array(X)), rtol=1e-11)


@pytest.mark.parametrize("endpoint,extra", [
    ("gradient", {}), ("jacobian", {}), ("jvp", {"v": {"x": [1.0, -2.0, 0.5]}}), ("vjp", {"u": [2.0]}),
    ("hvp", {"v": {"x": [1.0, -2.0, 0.5]}}), ("hessian", {}),
])
def test_verify_passes_on_correct_rules(client, endpoint, extra):
    r = client.post(f"/v1/{endpoint}", json={"function": {"dsl": F}, "at": {"x": X}, "verify": True, **extra})
    assert r.status_code == 200, r.text
    v = r.json()["verification"]
    assert v["passed"] is True, v
    assert v["max_rel_err"] < 1e-6
    assert {"max_abs_err", "max_rel_err", "passed", "fd_error_estimate"} <= set(v)


def test_verify_flags_a_wrong_rule(client, monkeypatch):
    """Inject a wrong derivative for sin (cos → -cos): verify must say so, not pass it through."""
    from derivd import ops

    prim = ops.get("sin")
    right = prim.jvp, prim.vjp
    monkeypatch.setattr(prim, "vjp", lambda p, out, ct: [ct * -ops.apply("cos", p[0])])
    monkeypatch.setattr(prim, "jvp", lambda p, t, out: None if t[0] is None else t[0] * -ops.apply("cos", p[0]))
    try:
        r = client.post("/v1/gradient", json={"function": {"dsl": "sum(sin(x) * x)"}, "at": {"x": X},
                                              "verify": True})
        v = r.json()["verification"]
        assert v["passed"] is False and v["max_rel_err"] > 0.1
    finally:
        prim.jvp, prim.vjp = right


def test_hessian_by_finite_differences(client):
    r = client.post("/v1/hessian", json={"function": {"dsl": F}, "at": {"x": X}, "mode": "finite"})
    body = r.json()
    np.testing.assert_allclose(body["hessian"], f_hess(np.array(X)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(body["gradient"]["x"], f_grad(np.array(X)), rtol=1e-9)


def test_blackbox_register_list_delete_never_echoes_headers(local, blackbox):
    spec = {"name": "sim", "url": blackbox.url("/f"), "input_size": 3, "output_size": 2,
            "headers": {"X-Token": "s3cret"}}
    r = local.post("/v1/blackboxes", json=spec)
    assert r.status_code == 200, r.text
    assert "headers" not in r.json() and "s3cret" not in r.text
    listed = local.get("/v1/blackboxes")
    assert [b["name"] for b in listed.json()["blackboxes"]] == ["sim"]
    assert "s3cret" not in listed.text
    assert local.delete("/v1/blackboxes/sim").status_code == 204
    assert local.get("/v1/blackboxes").json()["blackboxes"] == []
    r = local.delete("/v1/blackboxes/sim")
    assert r.status_code == 404 and r.json()["error"]["code"]


def test_blackbox_jacobian_and_gradient(local, blackbox):
    local.post("/v1/blackboxes", json={"name": "f2", "url": blackbox.url("/f"), "input_size": 3,
                                       "output_size": 2})
    x = np.array(X)
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "f2"}, "at": {"x": X}})
    assert r.status_code == 200, r.text
    body = r.json()
    want = np.vstack([2 * x, np.prod(np.sin(x)) / np.tan(x)])
    np.testing.assert_allclose(body["jacobian"], want, rtol=1e-8)
    assert body["engine"] == "finite" and body["blackbox"]["evaluations"] == body["fd"]["evaluations"]
    r = local.post("/v1/evaluate", json={"function": {"blackbox": "f2"}, "at": {"x": X}})
    np.testing.assert_allclose(r.json()["value"], [np.sum(x**2), np.prod(np.sin(x))], rtol=1e-15)


def test_blackbox_refused_by_default_allow_list(client, blackbox):
    blackbox.reset()
    r = client.post("/v1/blackboxes", json={"name": "loop", "url": blackbox.url("/f"), "input_size": 1,
                                            "output_size": 2})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "blackbox_refused"
    assert "/f" not in blackbox.paths()


def test_blackbox_bad_answers_are_502(local, blackbox):
    local.post("/v1/blackboxes", json={"name": "nan", "url": blackbox.url("/nan"), "input_size": 3,
                                       "output_size": 2})
    r = local.post("/v1/gradient", json={"function": {"blackbox": "nan"}, "at": {"x": X}})
    assert r.status_code in (400, 502)
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "nan"}, "at": {"x": X}})
    assert r.status_code == 502
    assert "nan" in r.json()["error"]["message"]


def test_blackbox_request_errors(local, blackbox):
    local.post("/v1/blackboxes", json={"name": "f3", "url": blackbox.url("/f"), "input_size": 3,
                                       "output_size": 2})
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "f3"}, "at": {"x": [1.0, 2.0]}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "shape_mismatch"
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "f3"}, "at": {"x": X}, "mode": "reverse"})
    assert r.status_code == 422
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "nope"}, "at": {"x": X}})
    assert r.status_code == 404


def test_finite_jacobian_colours_the_detected_pattern(client):
    """A banded program: finite differences perturb 3 colours of columns, not n columns."""
    n = 30
    x = np.linspace(0.1, 1.0, n)
    dsl = "concat([x[:1] ** 2, x[1:] * x[:-1], sin(x[-1:])])"
    dense = client.post("/v1/jacobian", json={"function": {"dsl": dsl}, "at": {"x": x.tolist()}}).json()
    fd = client.post("/v1/jacobian", json={"function": {"dsl": dsl}, "at": {"x": x.tolist()}, "mode": "finite",
                                           "sparse": True}).json()
    assert fd["sparsity"]["colors"] <= 3
    assert fd["fd"]["evaluations"] < 2 * n
    got = np.zeros((n + 1, n))
    got[fd["jacobian"]["rows"], fd["jacobian"]["cols"]] = fd["jacobian"]["values"]
    np.testing.assert_allclose(got, dense["jacobian"], rtol=1e-8, atol=1e-10)


def test_blackbox_jacobian_with_a_caller_pattern(local, blackbox):
    local.post("/v1/blackboxes", json={"name": "pat", "url": blackbox.url("/f"), "input_size": 3,
                                       "output_size": 2})
    x = np.array(X)
    every = {"rows": [0, 0, 0, 1, 1, 1], "cols": [0, 1, 2, 0, 1, 2]}
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "pat"}, "at": {"x": X}, "pattern": every,
                                         "sparse": True})
    assert r.status_code == 200, r.text
    coo = r.json()["jacobian"]
    got = np.zeros((2, 3))
    got[coo["rows"], coo["cols"]] = coo["values"]
    np.testing.assert_allclose(got, np.vstack([2 * x, np.prod(np.sin(x)) / np.tan(x)]), rtol=1e-8)
    r = local.post("/v1/jacobian", json={"function": {"blackbox": "pat"}, "at": {"x": X},
                                         "pattern": {"rows": [2], "cols": [0]}})
    assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "pattern"
