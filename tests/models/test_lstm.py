"""An LSTM over 10 time steps with a cross-entropy loss, in the DSL.

One layer, hidden size H, input size I, vocabulary V:

    z = W [x_t; h] + b,  (i, f, o, g) = (σ, σ, σ, tanh)(z split in four)
    c = f c + i g,  h = o tanh(c),  logits = U h + d,
    loss = -Σ_t log softmax(logits)[y_t]

The targets y are an integer constant array: ``lp[y[t]]`` is a gather by a gather
inside the loop. The reference is a separate numpy implementation and its
gradient 8th-order finite differences; the loop is checked as a loop node and
unrolled.
"""

from __future__ import annotations

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from tests.dsl.support import as_arrays, assert_close, call
from tests.references import central_difference, fd_jacobian

T, I, H, V = 10, 3, 4, 5

LSTM = f"""
def gates(z, k): return z[k * {H}:(k + 1) * {H}]
h = zeros({H})
c = zeros({H})
loss = 0.0
for t in range({T}):
    z = W @ concat([xs[t], h]) + b
    c = sigmoid(gates(z, 1)) * c + sigmoid(gates(z, 0)) * tanh(gates(z, 3))
    h = sigmoid(gates(z, 2)) * tanh(c)
    logits = U @ h + d
    lp = logits - logsumexp(logits)
    loss = loss - lp[y[t]]
loss / {T}
"""


def reference_loss(W, b, U, d, xs, y):
    def sig(v):
        return 1 / (1 + np.exp(-v))

    h, c, loss = np.zeros(H), np.zeros(H), 0.0
    for t in range(T):
        z = W @ np.concatenate([xs[t], h]) + b
        i, f, o, g = sig(z[:H]), sig(z[H:2 * H]), sig(z[2 * H:3 * H]), np.tanh(z[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        logits = U @ h + d
        loss -= logits[y[t]] - np.log(np.sum(np.exp(logits)))
    return loss / T


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(5)
    at = {"W": rng.normal(size=(4 * H, I + H)) * 0.5, "b": rng.normal(size=4 * H) * 0.1,
          "U": rng.normal(size=(V, H)), "d": rng.normal(size=V) * 0.1}
    return at, {"xs": rng.normal(size=(T, I)), "y": rng.integers(0, V, T)}


@pytest.mark.parametrize("unroll", [10**9, 0], ids=["unrolled", "loop node"])
def test_lstm_loss_gradient_against_finite_differences(problem, unroll):
    at, constants = problem
    service = Service(Settings(loop_unroll_nodes=unroll))
    request = Request(function={"dsl": LSTM}, at={k: np.asarray(v) for k, v in at.items()},
                      constants=as_arrays(constants))
    r, _ = service.compute("gradient", request)
    assert r["value"] == pytest.approx(reference_loss(**at, **constants), rel=1e-13)
    got = np.concatenate([np.reshape(r["gradient"][k], -1) for k in at])
    fd = fd_jacobian(lambda **kw: reference_loss(**kw, **constants), at)[0]
    assert_close(got, fd, 1e-7, "LSTM gradient vs finite differences of the numpy reference")


def test_lstm_forward_mode_and_hvp_agree_with_reverse(problem):
    at, constants = problem
    rev = call("gradient", LSTM, at, constants)
    grad = np.concatenate([np.reshape(rev["gradient"][k], -1) for k in at])
    fwd = call("jacobian", LSTM, at, constants, mode="forward")
    assert_close(np.reshape(fwd["jacobian"], -1), grad, 1e-12, "forward vs reverse")
    rng = np.random.default_rng(1)
    v = {k: rng.normal(size=np.shape(a)) for k, a in at.items()}
    hv = call("hvp", LSTM, at, constants, v=v)["hvp"]

    def grad_at(t):
        g = call("gradient", LSTM, {k: a + t * v[k] for k, a in at.items()}, constants)["gradient"]
        return np.concatenate([np.reshape(g[k], -1) for k in at])

    fd = central_difference(grad_at, 1e-3)
    assert_close(np.concatenate([np.reshape(hv[k], -1) for k in at]), fd, 1e-7, "HVP vs FD of the gradient")
