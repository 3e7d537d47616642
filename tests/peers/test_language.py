"""Peer agreement for numpy's spellings, methods, indexing and shape functions (see harness.py)."""

import numpy as np
import pytest

from tests.peers.harness import Case, check

RNG = np.random.default_rng(11)
x, m, t = RNG.normal(size=6), RNG.normal(size=(4, 5)), RNG.normal(size=(3, 4, 5))
X, M, T = {"x": x}, {"m": m}, {"t": t}
W = RNG.normal(size=64)  # weights making every output entry matter: sum(w * f) over f's entries


def weighted(dsl, peer, at):
    """``sum(w[:size] * ravel(f))``: a scalar that reads every entry of ``f`` with its own weight."""
    def reference(np, *inputs_and_w):
        *inputs, w = inputs_and_w
        f = np.ravel(peer(np, *inputs))
        return np.sum(f * w[:f.size])

    return Case(f"f = {dsl}\nsum(ravel(f) * w[:f.size])", reference, at, constants={"w": W})


CASES = [
    weighted("np.sin(x) * numpy.exp(x) + jnp.tanh(x)", lambda np, x: np.sin(x) * np.exp(x) + np.tanh(x), X),
    weighted("np.arctan2(x, 2.0) + np.arcsinh(x) + np.absolute(x) + np.power(x * x + 1, 1.5)",
             lambda np, x: np.arctan2(x, 2.0) + np.arcsinh(x) + np.absolute(x) + np.power(x * x + 1, 1.5), X),
    weighted("np.linalg.det(m[:, :4])", lambda np, m: np.linalg.det(m[:, :4]), M),
    weighted("m.sum(axis=0) + m.mean(1).sum() + m.max(0)", lambda np, m: m.sum(axis=0) + m.mean(1).sum() + m.max(0), M),
    weighted("m.T.dot(m)[:4] + m.reshape(5, 4).transpose()", lambda np, m: np.dot(m.T, m)[:4] + m.reshape(5, 4).T, M),
    weighted("t[..., 1] + t[:, ..., None][..., 2, 0]", lambda np, t: t[..., 1] + t[:, ..., None][..., 2, 0], T),
    weighted("x[:, None] * x[None, :]", lambda np, x: x[:, None] * x[None, :], X),
    weighted("x[[0, 2, 2, -1]]", lambda np, x: x[np.array([0, 2, 2, -1])], X),
    weighted("m[[0, 1, 3], [4, 0, 0]]", lambda np, m: m[np.array([0, 1, 3]), np.array([4, 0, 0])], M),
    weighted("t[2, 1:, [0, 3]]", lambda np, t: t[2, 1:, np.array([0, 3])], T),
    weighted("t[:, [0, 2], [1, 3]]", lambda np, t: t[:, np.array([0, 2]), np.array([1, 3])], T),
    weighted("x[[True, False, True, True, False, True]]",
             lambda np, x: x[np.array([True, False, True, True, False, True])], X),
    weighted("roll(m, (1, -2), axis=(0, 1))", lambda np, m: np.roll(np.roll(m, 1, axis=0), -2, axis=1), M),
    weighted("roll(x, 2)", lambda np, x: np.roll(x, 2), X),
    # autograd has no vjp of flip, take, diagonal's offsets or pad's modes: its reference indexes (JAX's calls them)
    weighted("flip(m, 1) + fliplr(m) + flipud(m)", lambda np, m: m[:, ::-1] + m[:, ::-1] + m[::-1], M),
    weighted("rot90(m) * 2", lambda np, m: np.rot90(m) * 2, M),
    weighted("tile(x, (2, 2))", lambda np, x: np.tile(x, (2, 2)), X),
    weighted("repeat(m, 2, axis=0)", lambda np, m: np.repeat(m, 2, axis=0), M),
    weighted("pad(m, 1)", lambda np, m: np.pad(m, 1, mode="constant"), M),
    weighted("pad(x, (2, 3), mode='edge')", lambda np, x: np.concatenate([x[:1], x[:1], x] + [x[-1:]] * 3), X),
    weighted("pad(x, (4, 2), mode='reflect')", lambda np, x: np.concatenate([x[4:0:-1], x, x[-2:-4:-1]]), X),
    weighted("pad(x, 3, mode='symmetric')", lambda np, x: np.concatenate([x[2::-1], x, x[:-4:-1]]), X),
    weighted("pad(x, 2, mode='wrap')", lambda np, x: np.concatenate([x[-2:], x, x[:2]]), X),
    weighted("triu(m, 1) + tril(m, -1)", lambda np, m: np.triu(m, 1) + np.tril(m, -1), M),
    weighted("diagonal(t, 1, 1, 2)", lambda np, t: t[:, np.arange(4), np.arange(1, 5)], T),
    weighted("diag(x, 1)[:6, :6] + diag(diag(x))", lambda np, x: np.diag(x, 1)[:6, :6] + np.diag(np.diag(x)), X),
    weighted("trace(m, 1) * trace(m)", lambda np, m: np.trace(m, 1) * np.trace(m), M),
    weighted("expand_dims(m, 1) * 2", lambda np, m: np.expand_dims(m, 1) * 2, M),
    weighted("squeeze(t[:1]) + 1", lambda np, t: np.squeeze(t[:1]) + 1, T),
    weighted("moveaxis(t, 0, -1)", lambda np, t: np.moveaxis(t, 0, -1), T),
    weighted("swapaxes(t, 0, 2)", lambda np, t: np.swapaxes(t, 0, 2), T),
    weighted("rollaxis(t, 2)", lambda np, t: np.rollaxis(t, 2), T),
    weighted("atleast_2d(x) + atleast_3d(x)[..., 0]", lambda np, x: np.atleast_2d(x) + np.atleast_3d(x)[..., 0], X),
    weighted("split(x, 3)[1] * array_split(x, 4)[0]", lambda np, x: np.split(x, 3)[1] * np.array_split(x, 4)[0], X),
    weighted("hsplit(m[:, 1:], 2)[1] + vsplit(m[:, 1:], 2)[0][0, :2]",
             lambda np, m: np.hsplit(m[:, 1:], 2)[1] + np.vsplit(m[:, 1:], 2)[0][0, :2], M),
    weighted("dsplit(t[:, :, 1:], 2)[0]", lambda np, t: np.dsplit(t[:, :, 1:], 2)[0], T),
    weighted("take(m, [1, 19, 3, 3])", lambda np, m: np.ravel(m)[np.array([1, 19, 3, 3])], M),
    weighted("linspace(x[0], x[1], 5)", lambda np, x: np.linspace(x[0], x[1], 5), X),
    weighted("full((2, 3), x[0]) * x[1]", lambda np, x: np.full((2, 3), x[0]) * x[1], X),
    weighted("zeros_like(m) + ones_like(m) * m + full_like(m, 2.0)",
             lambda np, m: np.zeros_like(m) + np.ones_like(m) * m + np.full_like(m, 2.0), M),
    weighted("select([x < -0.5, x < 0.5], [x * x, x], 1 - x)",
             lambda np, x: np.select([x < -0.5, x < 0.5], [x * x, x], 1 - x), X),
    weighted("np.hstack([x, x * x]) + np.concatenate([x, x])", lambda np, x: np.hstack([x, x * x]) +
             np.concatenate([x, x]), X),
    weighted("np.vstack([m, m * m]) + np.dstack([m, m])[..., 1].sum()",
             lambda np, m: np.vstack([m, m * m]) + np.dstack([m, m])[..., 1].sum(), M),
    weighted("column_stack([x, x * x])", lambda np, x: np.column_stack([x, x * x]), X),
    weighted("broadcast_to(x, (2, 6)) * np.append(x, x[:1])[1:]",
             lambda np, x: np.ones((2, 1)) * x * np.concatenate([x, x[:1]])[1:], X),
    weighted("clip(x, -0.5, 0.5) + clip(x, a_min=0.1)", lambda np, x: np.clip(x, -0.5, 0.5) + np.clip(x, 0.1, None), X),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_matches_the_peer(case):
    check(case)
