"""The caller against a real HTTP black box on 127.0.0.1."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from derivd import clock
from derivd.blackbox import BlackBoxCaller, BlackBoxSpec
from derivd.errors import DeadlineExceeded, ShapeError, UpstreamError, UpstreamTimeout
from tests.support import wait_for

_COUNTER = iter(range(10**9))


def caller(server, settings, path, **spec) -> BlackBoxCaller:
    # A fresh name per caller, so every test gets its own pooled client.
    fields = {"name": f"bb{next(_COUNTER)}", "url": server.url(path), "input_size": 3, "output_size": 2}
    fields.update(spec)
    return BlackBoxCaller(BlackBoxSpec(**fields), settings)


def expected(server, X: np.ndarray) -> np.ndarray:
    """What the test server's function gives, computed here in Python."""
    return np.array([server.f(list(x)) for x in X])


def points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3))


def test_values_are_exact(server, local_settings):
    X = points(5)
    Y = caller(server, local_settings, "/f").evaluate(X)
    assert Y.shape == (5, 2)
    np.testing.assert_array_equal(Y, expected(server, X))  # JSON round-trips float64 exactly


def test_points_are_in_flight_together(server, local_settings):
    """41 points (a 20-input central gradient), 20 at a time: the bound is used and respected, and
    connections are pooled. The black box holds the calls at its gate until 20 wait there at once:
    sent together, not one after another. How close the wall time comes to 3 waves of a slow black
    box is measured by bench/blackbox_latency.py (a wall-clock figure, not a test)."""
    c = caller(server, local_settings, "/gate", max_concurrency=20)
    c.evaluate(points(20, seed=1))  # opens the pool's 20 connections
    opened = server.connections
    X = points(41, seed=10)
    server.hold()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(c.evaluate, X)
        wait_for(lambda: server.in_flight >= 20, "20 calls held at the black box at once")
        server.release()
        Y = pending.result()
    np.testing.assert_allclose(Y, expected(server, X), rtol=1e-15)
    assert server.connections == opened  # pooled connections outlive a request
    assert server.max_in_flight == 20  # the bound is both used and respected
    assert c.evaluations == 20 + 41


def test_concurrency_bound_holds_across_threads(server, local_settings):
    """The bound protects the black box, so it holds across requests."""
    c = caller(server, local_settings, "/gate", max_concurrency=8)
    server.hold()
    with ThreadPoolExecutor(2) as pool:
        pending = pool.map(c.evaluate, [points(16, seed=20), points(16, seed=21)])
        wait_for(lambda: server.in_flight >= 8, "8 calls held at the black box at once")
        server.release()
        results = list(pending)
    np.testing.assert_allclose(results[1], expected(server, points(16, seed=21)), rtol=1e-15)
    assert server.max_in_flight == 8 and len(server.requests) == 32


def test_failures_are_retried(server, local_settings):
    settings = local_settings.model_copy(update={"blackbox_retries": 6})
    X = points(41, seed=3)
    Y = caller(server, settings, "/flaky").evaluate(X)
    np.testing.assert_allclose(Y, expected(server, X), rtol=1e-15)
    assert server.failures > 0 and len(server.requests) == 41 + server.failures


def test_identical_points_are_evaluated_once(server, local_settings):
    distinct = points(3, seed=4)
    X = distinct[[0, 1, 0, 2, 2, 1, 0]]
    c = caller(server, local_settings, "/f")
    Y = c.evaluate(X)
    np.testing.assert_array_equal(Y, expected(server, X))
    assert len(server.requests) == 3 and c.evaluations == 3


def test_batch_mode_sends_one_request(server, local_settings):
    X = points(41, seed=5)
    Y = caller(server, local_settings, "/batch", batch=True).evaluate(X)
    np.testing.assert_array_equal(Y, expected(server, X))
    assert server.paths() == ["/batch"] and len(server.requests[0][1]["xs"]) == 41


def test_batch_mode_splits_large_batches(server, local_settings):
    spec = BlackBoxSpec(name="chunked", url=server.url("/batch"), input_size=3, output_size=2, batch=True)
    X = points(41, seed=6)
    Y = BlackBoxCaller(spec, local_settings, max_batch_points=16).evaluate(X)
    np.testing.assert_array_equal(Y, expected(server, X))
    assert sorted(len(body["xs"]) for _, body, _ in server.requests) == [9, 16, 16]


def test_stored_headers_are_sent(server, local_settings):
    c = caller(server, local_settings, "/f", headers={"Authorization": "Bearer s3cret"})
    c.evaluate(points(1))
    headers = server.requests[0][2]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    "path, batch, message",
    [
        ("/nan", False, "returned a non-finite number (nan) in y[0]"),
        ("/short", False, "returned y of length 1, expected 2"),
        ("/long", False, "returned y of length 3, expected 2"),
        ("/string", False, "returned y[1] of type str, expected a number"),
        ("/noy", False, "returned JSON without a 'y' field"),
        ("/notjson", False, "returned a body that is not JSON"),
        ("/batch-short", True, "returned ys of length 1 for 2 points"),
        ("/redirect", False, "answered with a redirect (HTTP 302), which is not followed"),
        ("/status/404", False, "answered HTTP 404"),
        ("/big", False, "sent a response larger than the 65536-byte cap"),
        ("/bigstream", False, "sent a response larger than the 65536-byte cap"),
    ],
)
def test_bad_answers_are_502_naming_the_black_box(server, local_settings, path, batch, message):
    c = caller(server, local_settings, path, batch=batch)
    with pytest.raises(UpstreamError) as info:
        c.evaluate(points(2))
    assert info.value.status == 502 and info.value.code == "blackbox_error"
    assert info.value.message == f"black box {c.spec.name!r} {message}"
    assert info.value.detail["blackbox"] == c.spec.name
    # Deterministic answers are not retried: at most one request per point. (Counted by path: the
    # previous case's second point may still land after this case's reset; the caller does not wait
    # for it once the first has failed.)
    assert server.paths().count(path) <= 2


def test_slow_black_box_is_504_after_retries(server, local_settings):
    settings = local_settings.model_copy(update={"blackbox_retries": 1})
    c = caller(server, settings, "/hang", timeout_s=0.15)  # never answers: only timeout_s ends a call
    with pytest.raises(UpstreamTimeout) as info:
        c.evaluate(points(1))
    assert info.value.status == 504
    assert info.value.message == (
        f"black box {c.spec.name!r} did not answer within timeout_s=0.15 after 2 attempts"
    )
    assert len(server.requests) == 2


def test_refused_connections_are_retried_then_502(local_settings, closed_port):
    spec = BlackBoxSpec(name="gone", url=f"http://127.0.0.1:{closed_port}/f", input_size=3, output_size=2)
    with pytest.raises(UpstreamError, match=r"'gone' could not be reached \(ConnectError\) after 4 attempts"):
        BlackBoxCaller(spec, local_settings).evaluate(points(1))


def test_request_deadline_is_honoured(server, local_settings):
    """A black box that never answers, a timeout_s of a minute: only the deadline can end the call."""
    c = caller(server, local_settings, "/hang", timeout_s=60)
    with pytest.raises(DeadlineExceeded) as info:
        c.evaluate(points(3), deadline=clock.now() + 0.1)
    assert info.value.status == 504 and info.value.detail["blackbox"] == c.spec.name


def test_a_deadline_passed_by_the_clock_sends_nothing(server, local_settings, monkeypatch):
    """The caller reads the service's clock: once it says the deadline is past, no call goes out."""
    c = caller(server, local_settings, "/f")
    deadline = clock.now() + 60
    later = deadline + 1
    monkeypatch.setattr(clock, "now", lambda: later)
    with pytest.raises(DeadlineExceeded) as info:
        c.evaluate(points(3), deadline=deadline)
    assert info.value.status == 504 and info.value.detail["blackbox"] == c.spec.name
    assert server.requests == []


def test_wrong_input_width_is_a_shape_error(server, local_settings):
    with pytest.raises(ShapeError, match=r"points of length 3, got an array of shape \(2, 4\)"):
        caller(server, local_settings, "/f").evaluate(np.ones((2, 4)))
    assert server.requests == []


def test_no_points_no_calls(server, local_settings):
    assert caller(server, local_settings, "/f").evaluate(np.empty((0, 3))).shape == (0, 2)
    assert server.requests == []
