"""Exported derivative programs (``GET /v1/functions/{id}/program``, ``Client.export``, ``derivd export``):
each derivative's module answers as the service does at random points, for DSL text and for a traced
Python function with embedded constants and two inputs; the text is deterministic and names the program
by its sha256; bad queries are 4xx; and a module runs in a fresh venv that has numpy and no derivd."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.references import rosenbrock_hessian

ROSEN = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
DERIVATIVES = ("value_and_gradient", "jacobian", "hvp", "hessian")


def test_every_derivative_answers_as_the_service(sdk):
    rng = np.random.default_rng(4)
    x0 = np.zeros(6)
    loaded = {d: sdk.export(ROSEN, {"x": x0}, derivative=d, load=True) for d in DERIVATIVES}
    for _ in range(4):
        x, v = rng.normal(size=6), rng.normal(size=6)
        g = sdk.gradient(ROSEN, x=x)
        value, grad = loaded["value_and_gradient"](x)
        assert value == pytest.approx(float(g.value), rel=1e-15)
        np.testing.assert_allclose(grad, g.gradient["x"], rtol=1e-14, atol=1e-14)
        y, J = loaded["jacobian"](x)
        np.testing.assert_allclose(J, sdk.jacobian(ROSEN, x=x).jacobian, rtol=1e-14, atol=1e-14)
        assert J.shape == (1, 6) and y.shape == (1,)
        _, grad2, hv = loaded["hvp"](x, v)
        np.testing.assert_allclose(hv, sdk.hvp(ROSEN, x=x, v=v).hvp["x"], rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(grad2, grad, rtol=1e-15)
        _, _, H = loaded["hessian"](x)
        np.testing.assert_allclose(H, sdk.hessian(ROSEN, x=x).hessian, rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(H, rosenbrock_hessian(x), rtol=1e-12, atol=1e-11)


def test_a_traced_function_with_constants_and_two_inputs(sdk):
    rng = np.random.default_rng(8)
    A = rng.normal(size=(5, 3))

    def f(x, s, A):
        return dd.sum(dd.tanh(A @ x) * s) + s**2

    at = {"x": np.zeros(3), "s": 0.0}
    module = sdk.export(f, at, constants={"A": A}, wrt=["x", "s"])
    assert "np.array([" in module and "_const_A" in module
    value_and_gradient = sdk.export(f, at, constants={"A": A}, wrt=["x", "s"], load=True)
    hvp = sdk.export(f, at, constants={"A": A}, wrt=["x", "s"], derivative="hvp", load=True)
    for _ in range(3):
        x, s, v = rng.normal(size=3), float(rng.normal()), rng.normal(size=4)
        service = sdk.gradient(f, x=x, s=s, constants={"A": A}, wrt=["x", "s"])
        value, grad = value_and_gradient(x, s)
        assert value == pytest.approx(float(service.value), rel=1e-14)
        np.testing.assert_allclose(grad, np.append(service.gradient["x"], service.gradient["s"]), rtol=1e-13)
        want = sdk.hvp(f, x=x, s=s, constants={"A": A}, wrt=["x", "s"], v={"x": v[:3], "s": v[3]}).hvp
        np.testing.assert_allclose(hvp(x, s, v)[2], np.append(want["x"], want["s"]), rtol=1e-12, atol=1e-13)


def test_the_text_is_deterministic_and_names_its_program(sdk, client):
    one = sdk.export(ROSEN, {"x": np.zeros(4)}, derivative="hvp")
    assert one == sdk.export(ROSEN, {"x": np.ones(4)}, derivative="hvp")  # shapes, not values
    assert hashlib.sha256(ROSEN.encode()).hexdigest() in one.split('"""')[1]
    assert one.startswith('"""hvp of a derivd program') and "needs numpy only" in one
    fid = client.post("/v1/functions", json={"dsl": ROSEN}).json()["id"]
    bad = client.get(f"/v1/functions/{fid}/program", params={"derivative": "laplacian", "shape": "x:4"})
    assert bad.status_code == 422 and bad.json()["error"]["detail"]["field"] == "derivative"
    missing = client.get(f"/v1/functions/{fid}/program", params={"derivative": "hvp"})
    assert missing.status_code == 422 and missing.json()["error"]["detail"]["names"] == ["x"]
    garbled = client.get(f"/v1/functions/{fid}/program", params={"shape": "x:ten"})
    assert garbled.status_code == 422 and garbled.json()["error"]["detail"]["field"] == "shape"
    vector = client.post("/v1/functions", json={"dsl": "x * 2"}).json()["id"]
    refused = client.get(f"/v1/functions/{vector}/program", params={"derivative": "hvp", "shape": "x:3"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_scalar"
    assert client.get("/v1/functions/nope/program", params={"shape": "x:3"}).status_code == 404


def test_the_cli_writes_the_module(cli_env, tmp_path):
    out = tmp_path / "rosen_grad.py"
    proc = subprocess.run([sys.executable, "-m", "derivd_client.cli", "export", ROSEN, "--at", "x=0,0,0",
                           "--out", str(out)], env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    scope: dict = {}
    exec(out.read_text(), scope)
    x = np.array([0.5, -0.2, 1.3])
    from scipy.optimize import rosen_der

    np.testing.assert_allclose(scope["value_and_gradient"](x)[1], rosen_der(x), rtol=1e-13)


@pytest.mark.skipif(os.environ.get("DERIVD_SKIP_VENV_TEST") == "1", reason="DERIVD_SKIP_VENV_TEST=1")
def test_a_module_runs_in_a_venv_without_derivd(sdk, tmp_path):
    from tests.clients.test_fresh_venv import ENV, Venv

    venv = Venv(tmp_path / "venv")
    venv.pip("numpy")
    module = tmp_path / "hess.py"
    module.write_text(sdk.export(ROSEN, {"x": np.zeros(5)}, derivative="hessian"))
    x = np.array([0.3, -1.1, 0.8, 1.4, -0.6])
    script = ("import importlib.util, json, sys; sys.path.insert(0, sys.argv[1]); import hess; "
              "print(json.dumps({'derivd': importlib.util.find_spec('derivd') is not None "
              "or importlib.util.find_spec('derivd_client') is not None, "
              f"'H': hess.hessian({x.tolist()!r})[2].tolist()}}))")
    proc = subprocess.run([str(venv.bin / "python"), "-c", script, str(tmp_path)], env=ENV, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["derivd"] is False
    np.testing.assert_allclose(answer["H"], sdk.hessian(ROSEN, x=x).hessian, rtol=1e-13, atol=1e-12)


def test_input_names_never_shadow_the_modules_own(sdk):
    """Inputs named like the exported function's own variables still answer as the analytic gradient."""
    program = "sum(N * y**2) + seeds * sum(y)"
    at = {"N": np.array([1.0, 2.0]), "y": np.array([0.5, -1.5]), "seeds": 3.0}
    vg = sdk.export(program, at, derivative="value_and_gradient", load=True)
    jac = sdk.export(program, at, derivative="jacobian", load=True)
    N, y, seeds = at["N"], at["y"], at["seeds"]
    want = np.concatenate([y**2, 2 * N * y + seeds, [np.sum(y)]])
    value, grad = vg(N, y, seeds)
    assert value == pytest.approx(np.sum(N * y**2) + seeds * np.sum(y), rel=1e-15)
    np.testing.assert_allclose(grad, want, rtol=1e-15)
    np.testing.assert_allclose(jac(N, y, seeds)[1], want[None, :], rtol=1e-15)
