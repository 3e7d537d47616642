"""The trace cache: a function is traced once per (shapes, closed-over values); a changed closed-over array,
new shapes, or state it cannot fingerprint trace again, and the server's answers follow the new values."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.clients.conftest import dd

trace_module = importlib.import_module("derivd_client.trace")  # the module (dd.trace is a function)


@pytest.fixture
def traces(monkeypatch):
    """Counts the real traces behind ``cached_trace``."""
    calls = []
    real = trace_module.trace

    def counting(fn, **examples):
        calls.append(sorted(examples))
        return real(fn, **examples)

    monkeypatch.setattr(trace_module, "trace", counting)
    monkeypatch.setattr(trace_module, "_traces", {})
    return calls


def test_traced_once_per_shapes_and_values(traces, sdk):
    w = np.array([1.0, 2.0, 3.0])

    def f(x):
        total = 0.0
        for i in range(len(x) - 1):  # unrolled by the tracer: costly to trace each call
            total = total + 100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2
        return total + dd.sum(w * x[:3])

    x = np.array([0.5, -0.3, 1.2])
    first = sdk.gradient(f, x=x).gradient["x"]
    for _ in range(3):
        np.testing.assert_array_equal(sdk.gradient(f, x=x + 0.0).gradient["x"], first)
    assert len(traces) == 1

    w[:] = [-1.0, 0.0, 4.0]  # the closed-over array changed: a new program, new constants
    g = sdk.gradient(f, x=x).gradient["x"]
    assert len(traces) == 2
    np.testing.assert_allclose(g - first, np.array([-2.0, -2.0, 1.0]), rtol=1e-12, atol=1e-12)

    sdk.gradient(f, x=np.ones(5))  # new shapes
    assert len(traces) == 3


def test_state_it_cannot_fingerprint_is_traced_every_time(traces, sdk):
    class Model:
        scale = 2.0

    model = Model()

    def f(x):
        return dd.sum(x**2) * model.scale

    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(sdk.gradient(f, x=x).gradient["x"], 4 * x)
    model.scale = 3.0
    np.testing.assert_allclose(sdk.gradient(f, x=x).gradient["x"], 6 * x)
    assert len(traces) == 2


def test_a_changed_global_is_seen(traces):
    namespace = {"dd": dd, "np": np, "W": np.eye(2)}
    exec("def f(x):\n    return dd.sum(W @ x)\n", namespace)
    f = namespace["f"]
    one = trace_module.cached_trace(f, x=2)
    assert trace_module.cached_trace(f, x=2) is one
    namespace["W"] = 2 * np.eye(2)
    two = trace_module.cached_trace(f, x=2)
    assert two is not one and len(traces) == 2
    np.testing.assert_array_equal(next(iter(two.constants.values())), 2 * np.eye(2))
