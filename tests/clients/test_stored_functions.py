"""Sessions of one program with the same constants: the first opening stores them, the next open by the id
(the server registers the function once), an array changed in place is a new function, and a function
the server evicted is stored again without the caller noticing. On a real server: gRPC, the session
socket and REST."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from tests.clients.conftest import dd

pytest.importorskip("grpc")
pytest.importorskip("derivd.grpc_api.server")
from derivd.config import Settings  # noqa: E402
from derivd.errors import NotFound  # noqa: E402
from tests.grpc_api.conftest import Stack  # noqa: E402

from derivd_client.grpc_client import GrpcClient  # noqa: E402
from derivd_client.session import open_session  # noqa: E402

LOGREG = "sum(softplus(-y * (X @ w))) + 0.5 * lam * sum(w**2)"
# Room for two stored functions of DATA's size: a third pushes the least recently used out.
CACHE_BYTES = 2 * (200 * 5 + 200 + 1) * 8 + 4096


def data(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 5))
    return {"X": X, "y": np.sign(rng.normal(size=200)), "lam": np.float64(0.1)}


def reference(constants: dict, w):
    """The loss and its gradient in closed form (numpy, scipy's expit)."""
    X, y, lam = constants["X"], constants["y"], float(constants["lam"])
    margin = -y * (X @ w)
    return np.sum(np.logaddexp(0.0, margin)) + 0.5 * lam * w @ w, -X.T @ (y * expit(margin)) + lam * w


@pytest.fixture(scope="module")
def stack():
    """A server whose stored functions live in its process only, two of DATA's size at most."""
    with Stack(Settings(host="127.0.0.1", data_dir="none", function_cache_bytes=CACHE_BYTES)) as s:
        yield s


@pytest.fixture()
def registrations(stack, monkeypatch):
    """The server's registrations of functions, counted."""
    count = [0]
    register = stack.service.functions.register

    def counted(*args, **kwargs):
        count[0] += 1
        return register(*args, **kwargs)

    monkeypatch.setattr(stack.service.functions, "register", counted)
    return count


@pytest.fixture(params=["socket", "grpc", "rest"])
def client(request, stack):
    if request.param == "rest":
        with dd.Client(stack.rest.url, timeout=60, retries=0) as c:
            yield c
    else:
        with GrpcClient(stack.target, timeout=60, retries=0, session_transport=request.param) as c:
            yield c


def answers_as_the_reference(client, constants: dict, rng) -> None:
    with open_session(client, LOGREG, {"w": np.zeros(5)}, constants=constants, wrt=["w"]) as s:
        for _ in range(2):
            w = rng.normal(size=5)
            value, grad = s.value_and_grad(w)
            want_value, want_grad = reference(constants, w)
            assert np.isclose(value, want_value, rtol=1e-13)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-12)


def test_the_function_is_registered_once_and_an_array_changed_in_place_is_a_new_one(client, stack, registrations):
    rng = np.random.default_rng(1)
    constants = data(1)
    answers_as_the_reference(client, constants, rng)
    assert registrations[0] == 1 and len(client.stored_functions) == 1
    (fid, _), = client.stored_functions._entries.values()
    stored = stack.service.get_function(fid)
    np.testing.assert_array_equal(stored.constants["X"], constants["X"])
    answers_as_the_reference(client, {k: np.copy(v) for k, v in constants.items()}, rng)  # equal: by id
    assert registrations[0] == 1
    constants["X"][3, 2] += 1.0  # the same array, other values: another function
    answers_as_the_reference(client, constants, rng)
    assert registrations[0] == 2 and len(client.stored_functions) == 1  # the same key, the new id


def test_a_function_the_server_evicted_is_stored_again(client, stack, registrations):
    rng = np.random.default_rng(2)
    constants = data(2)
    answers_as_the_reference(client, constants, rng)
    (fid, _), = client.stored_functions._entries.values()
    for seed in (3, 4):  # two more functions of the same size: the first is evicted
        stack.service.register_function(LOGREG, data(seed))
    with pytest.raises(NotFound):
        stack.service.get_function(fid)
    registrations[0] = 0
    answers_as_the_reference(client, constants, rng)  # 404 on the id, then the program and constants again
    assert registrations[0] == 1
    assert stack.service.get_function(fid).dsl == LOGREG
    assert [f for f, _ in client.stored_functions._entries.values()] == [fid]
