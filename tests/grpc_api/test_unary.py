"""Every unary derivd.v1 method over a real socket: the numbers equal REST's and the analytic derivatives."""

from __future__ import annotations

import base64
import math

import grpc
import numpy as np
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from tests.grpc_api.wire import arr, fn, unarr

F = "[x[0]*sin(x[1]), exp(x[0]) + x[1]**2]"  # R^2 -> R^2
S = "sum(x**3)/3 + x[0]*x[1] + y*sin(x[2])"  # R^3 x R -> R


def jac_F(x):
    return np.array([[np.sin(x[1]), x[0] * np.cos(x[1])], [np.exp(x[0]), 2 * x[1]]])


def grad_S(x, y):
    gx = x**2 + np.array([x[1], x[0], y * np.cos(x[2])])
    return gx, np.sin(x[2])


def hess_S(x, y):
    """Rows/columns: x0, x1, x2, y."""
    H = np.zeros((4, 4))
    H[:3, :3] = np.diag(2 * x)
    H[0, 1] = H[1, 0] = 1.0
    H[2, 2] -= y * np.sin(x[2])
    H[2, 3] = H[3, 2] = np.cos(x[2])
    return H


X2 = np.array([0.7, 1.9])
X3, Y = np.array([0.4, -1.3, 0.8]), 1.7


def rest_post(rest, endpoint, body):
    r = rest.post(f"/v1/{endpoint}", json=body)
    return r.status_code, r.json()


def test_evaluate_keeps_shape_and_matches_rest(stub, rest):
    A = np.array([[1.0, 2.0], [3.0, 4.0]])
    r = stub.Evaluate(pb.EvaluateRequest(function=fn("A.T * 2 + c"), at={"A": arr(A)},
                                         constants={"c": arr([1, -1], "int64")}))
    np.testing.assert_array_equal(unarr(r.value), A.T * 2 + np.array([1, -1]))
    status, body = rest_post(rest, "evaluate", {"function": {"dsl": "A.T * 2 + c"}, "at": {"A": A.tolist()},
                                                 "constants": {"c": [1, -1]}})
    assert status == 200
    np.testing.assert_array_equal(unarr(r.value), body["value"])
    assert r.engine == body["engine"]


@pytest.mark.parametrize("mode", [pb.MODE_AUTO, pb.MODE_FORWARD, pb.MODE_REVERSE])
def test_jacobian_dense(stub, rest, mode):
    r = stub.Jacobian(pb.JacobianRequest(function=fn(F), at={"x": arr(X2)}, mode=mode))
    np.testing.assert_allclose(unarr(r.jacobian), jac_F(X2), rtol=1e-15)
    assert list(r.shape) == [2, 2]
    name = pb.Mode.Name(mode).removeprefix("MODE_").lower()
    _, body = rest_post(rest, "jacobian", {"function": {"dsl": F}, "at": {"x": X2.tolist()}, "mode": name})
    np.testing.assert_array_equal(unarr(r.jacobian), body["jacobian"])
    np.testing.assert_array_equal(unarr(r.value), body["value"])
    assert r.engine == body["engine"]
    assert r.timing.compute_ms >= 0 and r.timing.queue_ms >= 0


def test_jacobian_sparse_coo(stub, rest):
    dsl = "[x[0]*x[2], sin(x[1]), x[2]**2]"
    x = np.array([0.5, 1.5, -2.0])
    dense = np.array([[x[2], 0, x[0]], [0, np.cos(x[1]), 0], [0, 0, 2 * x[2]]])
    r = stub.Jacobian(pb.JacobianRequest(function=fn(dsl), at={"x": arr(x)}, sparse=True))
    coo = r.jacobian_coo
    got = np.zeros(tuple(coo.shape))
    got[list(coo.rows), list(coo.cols)] = unarr(coo.values)
    np.testing.assert_allclose(got, dense, rtol=1e-15)
    assert len(coo.rows) == np.count_nonzero(dense)
    _, body = rest_post(rest, "jacobian", {"function": {"dsl": dsl}, "at": {"x": x.tolist()}, "sparse": True})
    assert list(coo.rows) == body["jacobian"]["rows"] and list(coo.cols) == body["jacobian"]["cols"]


def test_gradient_with_wrt_and_two_inputs(stub, rest):
    r = stub.Gradient(pb.GradientRequest(function=fn(S), at={"x": arr(X3), "y": arr(Y)}))
    gx, gy = grad_S(X3, Y)
    np.testing.assert_allclose(unarr(r.gradient["x"]), gx, rtol=1e-14)
    np.testing.assert_allclose(unarr(r.gradient["y"]), gy, rtol=1e-14)
    assert unarr(r.gradient["y"]).shape == ()
    assert math.isclose(r.value, np.sum(X3**3) / 3 + X3[0] * X3[1] + Y * np.sin(X3[2]), rel_tol=1e-14)
    _, body = rest_post(rest, "gradient", {"function": {"dsl": S}, "at": {"x": X3.tolist(), "y": Y}})
    np.testing.assert_array_equal(unarr(r.gradient["x"]), body["gradient"]["x"])
    assert r.value == body["value"] and r.engine == body["engine"]

    only = stub.Gradient(pb.GradientRequest(function=fn(S), at={"x": arr(X3), "y": arr(Y)}, wrt=["y"]))
    assert list(only.gradient) == ["y"]


def test_jvp_and_vjp(stub, rest):
    v, u = np.array([0.5, -2.0]), np.array([3.0, -1.0])
    r = stub.Jvp(pb.JvpRequest(function=fn(F), at={"x": arr(X2)}, v={"x": arr(v)}))
    np.testing.assert_allclose(unarr(r.jvp), jac_F(X2) @ v, rtol=1e-14)
    _, body = rest_post(rest, "jvp", {"function": {"dsl": F}, "at": {"x": X2.tolist()}, "v": {"x": v.tolist()}})
    np.testing.assert_array_equal(unarr(r.jvp), body["jvp"])

    r = stub.Vjp(pb.VjpRequest(function=fn(F), at={"x": arr(X2)}, u=arr(u)))
    np.testing.assert_allclose(unarr(r.vjp["x"]), u @ jac_F(X2), rtol=1e-14)
    _, body = rest_post(rest, "vjp", {"function": {"dsl": F}, "at": {"x": X2.tolist()}, "u": u.tolist()})
    np.testing.assert_array_equal(unarr(r.vjp["x"]), body["vjp"]["x"])


def test_a_boolean_constant_indexes_as_a_mask_on_both_wires(stub, rest):
    """x[mask] with mask a bool constant: numpy's selection, its gradient, through gRPC's decoder and
    REST's (JSON booleans and base64 bool bytes), the second mask not answered by the first's tape."""
    x = np.array([0.3, -1.2, 2.0, 0.5])
    for mask in (np.array([True, False, True, True]), np.array([False, True, False, False])):
        want_value, want_grad = np.sum(x[mask] ** 3), np.where(mask, 3 * x ** 2, 0.0)
        r = stub.Gradient(pb.GradientRequest(function=fn("sum(x[k] ** 3)"), at={"x": arr(x)},
                                             constants={"k": arr(mask, "bool")}))
        np.testing.assert_allclose(r.value, want_value, rtol=1e-14)
        np.testing.assert_allclose(unarr(r.gradient["x"]), want_grad, rtol=1e-14)
        encoded = {"dtype": "bool", "shape": [4], "data": base64.b64encode(mask.tobytes()).decode()}
        for k in (mask.tolist(), encoded):
            status, body = rest_post(rest, "gradient", {"function": {"dsl": "sum(x[k] ** 3)"}, "at": {"x": x.tolist()},
                                                        "constants": {"k": k}})
            assert status == 200, body
            np.testing.assert_allclose(body["gradient"]["x"], want_grad, rtol=1e-14)
        r = stub.Evaluate(pb.EvaluateRequest(function=fn("x[k]"), at={"x": arr(x)}, constants={"k": arr(mask, "bool")}))
        np.testing.assert_array_equal(unarr(r.value), x[mask])


def test_stored_function_by_id(stub, rest):
    created = rest.post("/v1/functions", json={"dsl": "sum(a * x**2)", "constants": {"a": [1.0, 3.0]}}).json()
    x = np.array([2.0, -1.0])
    r = stub.Gradient(pb.GradientRequest(function=pb.Function(id=created["id"]), at={"x": arr(x)}))
    np.testing.assert_allclose(unarr(r.gradient["x"]), 2 * np.array([1.0, 3.0]) * x, rtol=1e-15)


def test_arrays_past_grpc_default_message_size(stub):
    """8 MB of float64 each way: the 4 MiB default is raised on both ends."""
    x = np.linspace(-1.0, 1.0, 1_000_000)
    r = stub.Gradient(pb.GradientRequest(function=fn("sum(sin(x))"), at={"x": arr(x)}))
    np.testing.assert_allclose(unarr(r.gradient["x"]), np.cos(x), rtol=1e-15)


# The second-order endpoints land in the core separately: gRPC must say exactly what REST says,
# and when REST answers, both must equal the analytic derivatives.

def _same_failure(call, status, body):
    with pytest.raises(grpc.RpcError) as e:
        call()
    md = dict(e.value.trailing_metadata())
    assert md["derivd-code"] == body["error"]["code"]
    assert e.value.details() == body["error"]["message"]
    assert e.value.code() == {501: grpc.StatusCode.UNIMPLEMENTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
                              400: grpc.StatusCode.INVALID_ARGUMENT}[status]


def test_hvp(stub, rest):
    v = np.array([1.0, -0.5, 2.0])
    w = 0.3
    call = lambda: stub.Hvp(pb.HvpRequest(function=fn(S), at={"x": arr(X3), "y": arr(Y)},
                                          v={"x": arr(v), "y": arr(w)}))
    status, body = rest_post(rest, "hvp", {"function": {"dsl": S}, "at": {"x": X3.tolist(), "y": Y},
                                           "v": {"x": v.tolist(), "y": w}})
    if status != 200:
        return _same_failure(call, status, body)
    r = call()
    hv = hess_S(X3, Y) @ np.append(v, w)
    np.testing.assert_allclose(unarr(r.hvp["x"]), hv[:3], rtol=1e-13)
    np.testing.assert_allclose(unarr(r.hvp["y"]), hv[3], rtol=1e-13)
    np.testing.assert_allclose(unarr(r.hvp["x"]), body["hvp"]["x"], rtol=1e-15)


def test_hessian(stub, rest):
    call = lambda: stub.Hessian(pb.HessianRequest(function=fn(S), at={"x": arr(X3), "y": arr(Y)}))
    status, body = rest_post(rest, "hessian", {"function": {"dsl": S}, "at": {"x": X3.tolist(), "y": Y}})
    if status != 200:
        return _same_failure(call, status, body)
    r = call()
    np.testing.assert_allclose(unarr(r.hessian), hess_S(X3, Y), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(unarr(r.gradient["x"]), grad_S(X3, Y)[0], rtol=1e-14)
    np.testing.assert_allclose(unarr(r.hessian), body["hessian"], rtol=1e-15)


def test_taylor(stub, rest):
    """f(x + t v) = exp(x + t v): c_k = exp(x) v^k / k!."""
    x, v, K = np.array([0.2, -0.7]), np.array([1.5, 0.5]), 5
    call = lambda: stub.Taylor(pb.TaylorRequest(function=fn("exp(x)"), at={"x": arr(x)}, v={"x": arr(v)}, order=K))
    status, body = rest_post(rest, "taylor", {"function": {"dsl": "exp(x)"}, "at": {"x": x.tolist()},
                                              "v": {"x": v.tolist()}, "order": K})
    if status != 200:
        return _same_failure(call, status, body)
    r = call()
    want = np.array([np.exp(x) * v**k / math.factorial(k) for k in range(K + 1)])
    np.testing.assert_allclose(unarr(r.coefficients).reshape(K + 1, -1), want, rtol=1e-13)
    np.testing.assert_allclose(unarr(r.coefficients).reshape(K + 1, -1), body["coefficients"], rtol=1e-15)


def test_derivatives(stub, rest):
    """f = [x0^2 x1, exp(x0) x1]: every tensor to order 3 against the analytic ones, and equal to REST."""
    x = np.array([0.3, -1.2])
    dsl = "[x[0]**2 * x[1], exp(x[0]) * x[1]]"
    r = stub.Derivatives(pb.DerivativesRequest(function=fn(dsl), at={"x": arr(x)}, order=3))
    status, body = rest_post(rest, "derivatives", {"function": {"dsl": dsl}, "at": {"x": x.tolist()}, "order": 3})
    assert status == 200, body
    a, b = x
    jac = [[2 * a * b, a * a], [np.exp(a) * b, np.exp(a)]]
    hess = [[[2 * b, 2 * a], [2 * a, 0.0]], [[np.exp(a) * b, np.exp(a)], [np.exp(a), 0.0]]]
    third = np.zeros((2, 2, 2, 2))
    third[0, 0, 0, 1] = third[0, 0, 1, 0] = third[0, 1, 0, 0] = 2.0
    third[1, 0, 0, 0] = np.exp(a) * b
    third[1, 0, 0, 1] = third[1, 0, 1, 0] = third[1, 1, 0, 0] = np.exp(a)
    tensors = [unarr(t) for t in r.tensors]
    for got, want, over_rest in zip(tensors, (jac, hess, third), body["tensors"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got, over_rest, rtol=1e-15)
    np.testing.assert_allclose(unarr(r.value), [a * a * b, np.exp(a) * b], rtol=1e-15)
    assert r.engine == "taylor" and r.directions == body["directions"] > 0
