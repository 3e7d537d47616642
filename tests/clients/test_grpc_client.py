"""The gRPC client against a live derivd.v1 server on the same core as the REST fixture:
its answers equal the REST client's and the analytic references; the HVP stream answers in order,
from a list (pipelined) and from a generator that depends on earlier products (conjugate gradients)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.clients.conftest import dd
from tests.clients.test_client import ROSENBROCK, VECTOR, X, X3, vector_jac
from tests.references import rosenbrock_gradient, rosenbrock_hessian

grpc = pytest.importorskip("grpc")
pytest.importorskip("derivd.grpc_api.server")
from derivd_client.grpc_client import GrpcClient  # noqa: E402


def test_sdk_stubs_are_generated_from_the_current_proto():
    """The SDK carries its own generated code; a proto change must regenerate it too."""
    from derivd.grpc_api import derivd_pb2 as server_pb

    from derivd_client._grpc import derivd_pb2 as sdk_pb

    assert sdk_pb.DESCRIPTOR.serialized_pb == server_pb.DESCRIPTOR.serialized_pb, \
        "proto/derivd/v1/derivd.proto changed: run bash scripts/gen_proto.sh"



def test_unary_calls_match_rest_and_references(rpc, sdk):
    r = rpc.gradient(ROSENBROCK, x=X)
    np.testing.assert_allclose(r.gradient["x"], rosenbrock_gradient(X), rtol=1e-13)
    np.testing.assert_array_equal(r.gradient["x"], sdk.gradient(ROSENBROCK, x=X).gradient["x"])
    assert set(r.timing) == {"compile", "queue", "compute"}

    e = rpc.evaluate(VECTOR, x=X3)
    np.testing.assert_array_equal(e.value, sdk.evaluate(VECTOR, x=X3).value)
    j = rpc.jacobian(VECTOR, x=X3)
    np.testing.assert_allclose(j.jacobian, vector_jac(X3), rtol=1e-14, atol=1e-15)
    assert j.shape == (3, 3)
    s = rpc.jacobian(VECTOR, x=X3, sparse=True)
    np.testing.assert_array_equal(s.jacobian.toarray(), j.jacobian)

    v, u = np.array([0.3, -1.0, 2.0]), np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(rpc.jvp(VECTOR, x=X3, v=v).jvp, vector_jac(X3) @ v, rtol=1e-14)
    np.testing.assert_allclose(rpc.vjp(VECTOR, x=X3, u=u).vjp["x"], u @ vector_jac(X3), rtol=1e-14)


def test_second_order_calls(rpc, sdk):
    v = np.array([1.0, -0.5, 0.25, 2.0])
    h = rpc.hvp(ROSENBROCK, x=X, v=v)
    full = rpc.hessian(ROSENBROCK, x=X)
    np.testing.assert_allclose(h.hvp["x"], rosenbrock_hessian(X) @ v, rtol=1e-12)
    np.testing.assert_allclose(full.hessian, rosenbrock_hessian(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(full.hessian, sdk.hessian(ROSENBROCK, x=X).hessian)


def test_derivative_tensors_on_both_transports(rpc, sdk):
    """``derivatives`` to order 2: the Jacobian and Hessian of the other endpoints, tensor by tensor,
    over gRPC and over REST in both encodings."""
    rest_list = sdk.derivatives(ROSENBROCK, x=X, order=2, encoding="list")
    rest_b64 = sdk.derivatives(ROSENBROCK, x=X, order=2, encoding="base64")
    over_grpc = rpc.derivatives(ROSENBROCK, x=X, order=2)
    for r in (rest_list, rest_b64, over_grpc):
        np.testing.assert_allclose(r.tensors[0], rosenbrock_gradient(X), rtol=1e-12)
        np.testing.assert_allclose(r.tensors[1], rosenbrock_hessian(X), rtol=1e-10, atol=1e-10)
        assert r.directions == over_grpc.directions and isinstance(r.directions, int)
    np.testing.assert_array_equal(over_grpc.tensors[1], rest_b64.tensors[1])


def test_several_inputs_keep_the_order_of_at(rpc, sdk):
    """Columns run over the inputs in `at` order (CONTRACT §2) on both transports, though a proto map
    has no order: f = x0^2 y + y^3 x1 with y given first."""
    at = {"y": 1.5, "x": np.array([0.7, -0.4])}
    y, (x0, x1) = 1.5, at["x"]
    expected = np.array([[6 * y * x1, 2 * x0, 3 * y ** 2],
                         [2 * x0, 2 * y, 0.0],
                         [3 * y ** 2, 0.0, 0.0]])
    over_grpc = rpc.hessian("x[0]**2 * y + y**3 * x[1]", at=at)
    np.testing.assert_allclose(over_grpc.hessian, expected, rtol=1e-14)
    np.testing.assert_array_equal(over_grpc.hessian, sdk.hessian("x[0]**2 * y + y**3 * x[1]", at=at).hessian)
    jac = rpc.jacobian("[x[0] * y, x[1]]", at=at).jacobian
    np.testing.assert_allclose(jac, [[x0, y, 0.0], [0.0, 0.0, 1.0]], rtol=1e-15)


def test_hvp_stream_answers_each_direction_in_order(rpc):
    directions = np.random.default_rng(3).normal(size=(6, 4))
    stream = rpc.hvp_stream(ROSENBROCK, x=X, directions=list(directions))
    products = [p["x"] for p in stream]
    np.testing.assert_allclose(np.array(products), directions @ rosenbrock_hessian(X).T, rtol=1e-12)
    assert stream.value == pytest.approx(np.sum(100 * (X[1:] - X[:-1] ** 2) ** 2 + (1 - X[:-1]) ** 2))
    np.testing.assert_allclose(stream.gradient["x"], rosenbrock_gradient(X), rtol=1e-13)


def test_hvp_stream_drives_conjugate_gradients(rpc):
    """Each CG direction depends on the previous product: the stream pulls it lazily."""
    g = rosenbrock_gradient(X)
    H = rosenbrock_hessian(X)
    state = {}

    def directions():
        r = -g
        p = r.copy()
        state["x"] = np.zeros_like(g)
        for _ in range(len(g)):
            yield p
            hp = state["hp"]
            alpha = (r @ r) / (p @ hp)
            state["x"] = state["x"] + alpha * p
            r_new = r - alpha * hp
            if np.linalg.norm(r_new) < 1e-12 * np.linalg.norm(g):
                return
            p = r_new + (r_new @ r_new) / (r @ r) * p
            r = r_new

    for product in rpc.hvp_stream(ROSENBROCK, x=X, directions=directions()):
        state["hp"] = product["x"]
    np.testing.assert_allclose(state["x"], np.linalg.solve(H, -g), rtol=1e-8)


def test_conjugate_gradients_start_from_the_streams_own_gradient(rpc):
    """The gradient arrives with the stream, before the lazy source's first direction is pulled."""
    pulled = []

    def directions(stream_of):
        g = stream_of().gradient["x"]  # read when the first direction is pulled: the stream has it by then
        r = -g
        p = r.copy()
        x = np.zeros_like(g)
        for _ in range(len(g)):
            pulled.append(p)
            yield p
            hp = products[-1]
            alpha = (r @ r) / (p @ hp)
            x = x + alpha * p
            r_new = r - alpha * hp
            if np.linalg.norm(r_new) < 1e-12 * np.linalg.norm(g):
                break
            p = r_new + (r_new @ r_new) / (r @ r) * p
            r = r_new
        solution.append(x)

    products, solution, holder = [], [], []
    stream = rpc.hvp_stream(ROSENBROCK, x=X, directions=directions(lambda: holder[0]))
    holder.append(stream)
    assert not pulled  # opened: value and gradient known, no direction pulled yet
    np.testing.assert_allclose(stream.gradient["x"], rosenbrock_gradient(X), rtol=1e-13)
    for product in stream:
        products.append(product["x"])
    np.testing.assert_allclose(solution[0], np.linalg.solve(rosenbrock_hessian(X), -rosenbrock_gradient(X)),
                               rtol=1e-8)


def test_grpc_errors_are_typed(rpc):
    with pytest.raises(dd.ParseError) as info:
        rpc.evaluate("x +* 1", x=1.0)
    assert info.value.code == "parse_error" and info.value.detail["line"] == 1
    with pytest.raises(dd.UnknownName):
        rpc.gradient("sum(x) + y", x=[1.0])
    with pytest.raises(dd.NotFound):
        rpc.gradient(dd.FunctionRef("0" * 32), x=[1.0])


def test_unreachable_grpc_server_is_a_connection_failure():
    from tests.support import free_port

    with GrpcClient(f"127.0.0.1:{free_port()}", timeout=2, retries=1, backoff=0.01) as c, \
            pytest.raises(dd.ConnectionFailed):
        c.evaluate("x", x=1.0)
