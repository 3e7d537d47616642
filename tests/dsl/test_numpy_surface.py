"""numpy's spellings of the language: namespaces (np., scipy.special., ...), array methods and
attributes, numpy's indexing (..., None, lists, literal masks, mixed basic and advanced), numpy's
shape and layout functions, and the refusals that name what is missing. Values against numpy
itself (shapes included), derivatives against finite differences of the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.errors import DerivdError
from tests.dsl.support import assert_close, call, check_against_numpy
from tests.references import fd_jacobian

RNG = np.random.default_rng(3)
X = RNG.normal(size=6)
M = RNG.normal(size=(4, 5))
T = RNG.normal(size=(3, 4, 5))
AT = {"x": X, "m": M, "t": T}


def check(dsl, f, *names, constants=None):
    """The program's value (and shape) is numpy's ``f``; its Jacobians agree with finite differences."""
    at = {n: AT[n] for n in names}
    got = call("evaluate", dsl, at, constants)["value"]
    want = np.asarray(f(**at, **(constants or {})), dtype=np.float64)
    assert np.shape(got) == want.shape, f"{dsl}: shape {np.shape(got)} vs numpy's {want.shape}"
    check_against_numpy(dsl, f, at, constants)


NAMESPACED = [
    ("np.sum(np.sin(x) * numpy.exp(x))", lambda x: np.sum(np.sin(x) * np.exp(x)), "x"),
    ("jnp.tanh(m) @ jnp.transpose(m)", lambda m: np.tanh(m) @ m.T, "m"),
    ("np.linalg.det(m[:, :4]) + numpy.linalg.norm(m)", lambda m: np.linalg.det(m[:, :4]) + np.linalg.norm(m), "m"),
    ("scipy.special.expit(x) + special.logsumexp(x)", lambda x: 1 / (1 + np.exp(-x)) + np.log(np.sum(np.exp(x))),
     "x"),
    ("scipy.linalg.inv(m[:4, :4] + 3 * np.eye(4))", lambda m: np.linalg.inv(m[:4, :4] + 3 * np.eye(4)), "m"),
    ("np.absolute(x) + fabs(x) + np.arctan2(x, 2.0) + arcsinh(x) + arctan(x)",
     lambda x: 2 * np.abs(x) + np.arctan2(x, 2.0) + np.arcsinh(x) + np.arctan(x), "x"),
    ("np.arcsin(x / 3) + arccos(x / 3) + arccosh(x * x + 1) + arctanh(x / 3)",
     lambda x: np.arcsin(x / 3) + np.arccos(x / 3) + np.arccosh(x * x + 1) + np.arctanh(x / 3), "x"),
    ("np.add(x, 1) * np.subtract(x, 2) + multiply(x, x) - np.divide(x, 3) + true_divide(1, x * x + 1)",
     lambda x: (x + 1) * (x - 2) + x * x - x / 3 + 1 / (x * x + 1), "x"),
    ("np.power(x * x + 1, 1.5) + np.negative(x) + np.mod(x, 0.7) + remainder(x, 0.9)",
     lambda x: (x * x + 1) ** 1.5 - x + np.mod(x, 0.7) + np.remainder(x, 0.9), "x"),
    ("np.pi * x + np.e + np.concatenate([x, x]).sum()", lambda x: np.pi * x + np.e + 2 * x.sum(), "x"),
    ("np.hstack([x, x]) + np.hstack([x[:3], x[3:]]).sum()", lambda x: np.hstack([x, x]) + x.sum(), "x"),
    ("np.vstack([m, m[:1]])", lambda m: np.vstack([m, m[:1]]), "m"),
    ("row_stack([x, x])", lambda x: np.vstack([x, x]), "x"),
    ("column_stack([x, x * 2])", lambda x: np.column_stack([x, x * 2]), "x"),
    ("np.dstack([m, m])", lambda m: np.dstack([m, m]), "m"),
    ("np.linalg.trace(t) + np.trace(m)", lambda t, m: np.linalg.trace(t) + np.trace(m), "t", "m"),
    ("scipy.special.softmax(m) + softmax(m)", lambda m: np.exp(m) / np.exp(m).sum() + np.exp(m) / np.exp(
        m).sum(axis=-1, keepdims=True), "m"),
    ("np.array([x[0], x[1] * 2]) + np.asarray(x[2:4])", lambda x: np.array([x[0], x[1] * 2]) + x[2:4], "x"),
]

METHODS = [
    ("m.sum() + m.sum(axis=0).sum() + m.sum(1)[2]", lambda m: 2 * m.sum() + m.sum(1)[2], "m"),
    ("m.mean(axis=1) * m.max(axis=1) + m.min(0)[1:]", lambda m: m.mean(axis=1) * m.max(axis=1) + m.min(0)[1:], "m"),
    ("(m * m + 1).prod(axis=1)", lambda m: (m * m + 1).prod(axis=1), "m"),
    ("m.cumsum(axis=1)", lambda m: m.cumsum(axis=1), "m"),
    ("m.reshape(5, 4) + m.reshape((5, 4)) + m.reshape(-1).reshape(5, 4)", lambda m: 3 * m.reshape(5, 4), "m"),
    ("m.ravel() + m.flatten()", lambda m: 2 * m.ravel(), "m"),
    ("t[:, :1].squeeze() + t.transpose(1, 0, 2)[0] + t.swapaxes(0, 1)[1]",
     lambda t: t[:, :1].squeeze() + t.transpose(1, 0, 2)[0] + t.swapaxes(0, 1)[1], "t"),
    ("m.T.dot(m) + m.transpose().dot(m)", lambda m: 2 * m.T @ m, "m"),
    ("m.clip(-0.5, 0.5) + m.round() + m.astype(float) + (m > 0).astype(np.float64)",
     lambda m: np.clip(m, -0.5, 0.5) + np.round(m) + m + (m > 0), "m"),
    ("m * m.shape[0] + m.ndim + m.size", lambda m: m * 4 + 2 + 20, "m"),
    ("(m + 1).T.sum(axis=0)", lambda m: (m + 1).T.sum(axis=0), "m"),
]

INDEXING = [
    ("t[..., 1]", lambda t: t[..., 1], "t"),
    ("t[1, ...]", lambda t: t[1, ...], "t"),
    ("t[0, ..., 2:]", lambda t: t[0, ..., 2:], "t"),
    ("x[:, None] * x[None, :]", lambda x: x[:, None] * x[None, :], "x"),
    ("x[:, np.newaxis] - x[np.newaxis]", lambda x: x[:, np.newaxis] - x[np.newaxis], "x"),
    ("t[None, ..., None, 1]", lambda t: t[None, ..., None, 1], "t"),
    ("x[[0, 2, 2, -1]]", lambda x: x[[0, 2, 2, -1]], "x"),
    ("m[[0, 3], 1:]", lambda m: m[[0, 3], 1:], "m"),
    ("m[:, [[0, 1], [4, 4]]]", lambda m: m[:, [[0, 1], [4, 4]]], "m"),
    ("m[[0, 1, 3], [4, 0, 0]]", lambda m: m[[0, 1, 3], [4, 0, 0]], "m"),
    ("x[[True, False, True, True, False, True]]", lambda x: x[[True, False, True, True, False, True]], "x"),
    ("m[[True, False, False, True]]", lambda m: m[[True, False, False, True]], "m"),
    ("t[2, 1:, [0, 3]]", lambda t: t[2, 1:, [0, 3]], "t"),
    ("t[[0, 2], 1:, [0, 3]]", lambda t: t[[0, 2], 1:, [0, 3]], "t"),
    ("t[:, [0, 2], [1, 3]]", lambda t: t[:, [0, 2], [1, 3]], "t"),
    ("t[[1], :, 2]", lambda t: t[[1], :, 2], "t"),
    ("t[1, [2, 0]]", lambda t: t[1, [2, 0]], "t"),
    ("t[:, 1, [4, 0]]", lambda t: t[:, 1, [4, 0]], "t"),
]

IDX = np.array([[0, 2], [1, -1]])
GATHERS = [
    ("t[2, 1:, i]", lambda t, i: t[2, 1:, i], {"i": np.array([0, 4, 4])}),
    ("t[i, :, j]", lambda t, i, j: t[i, :, j], {"i": np.array([0, 2]), "j": np.array([[1], [3]])}),
    ("t[:, i, j]", lambda t, i, j: t[:, i, j], {"i": IDX, "j": np.array([0, -1])}),
    ("t[i, [1, 2]]", lambda t, i: t[i, [1, 2]], {"i": np.array([2, -3])}),
    ("t[..., i][0]", lambda t, i: t[..., i][0], {"i": IDX}),
]

LAYOUT = [
    ("roll(x, 2) + np.roll(x, -1) + roll(x, 13)", lambda x: np.roll(x, 2) + np.roll(x, -1) + np.roll(x, 13), "x"),
    ("roll(m, 1, axis=1) + roll(m, (1, -2), axis=(0, 1)) + roll(m, 3)",
     lambda m: np.roll(m, 1, axis=1) + np.roll(m, (1, -2), axis=(0, 1)) + np.roll(m, 3), "m"),
    ("flip(m) + flip(m, 0) + np.flip(m, axis=1) + fliplr(m) + flipud(m)",
     lambda m: np.flip(m) + np.flip(m, 0) + np.flip(m, axis=1) + np.fliplr(m) + np.flipud(m), "m"),
    ("rot90(m)", lambda m: np.rot90(m), "m"),
    ("rot90(m, 2) + rot90(m, -2)", lambda m: np.rot90(m, 2) + np.rot90(m, -2), "m"),
    ("rot90(t, 3, axes=(0, 2))", lambda t: np.rot90(t, 3, axes=(0, 2)), "t"),
    ("tile(x, 2)", lambda x: np.tile(x, 2), "x"),
    ("tile(m, (2, 1, 3))", lambda m: np.tile(m, (2, 1, 3)), "m"),
    ("repeat(x, 2)", lambda x: np.repeat(x, 2), "x"),
    ("repeat(m, [1, 0, 2, 1], axis=0)", lambda m: np.repeat(m, [1, 0, 2, 1], axis=0), "m"),
    ("repeat(m, 3, axis=-1)", lambda m: np.repeat(m, 3, axis=-1), "m"),
    ("pad(x, 2)", lambda x: np.pad(x, 2), "x"),
    ("pad(m, ((1, 0), (2, 3)), constant_values=1.5)", lambda m: np.pad(m, ((1, 0), (2, 3)), constant_values=1.5),
     "m"),
    ("pad(m, (1, 2), mode='edge')", lambda m: np.pad(m, (1, 2), mode="edge"), "m"),
    ("pad(x, (3, 8), mode='reflect')", lambda x: np.pad(x, (3, 8), mode="reflect"), "x"),
    ("pad(m, ((2, 1), (0, 6)), mode='symmetric')", lambda m: np.pad(m, ((2, 1), (0, 6)), mode="symmetric"), "m"),
    ("pad(m, 7, mode='wrap')", lambda m: np.pad(m, 7, mode="wrap"), "m"),
    ("triu(m) + tril(m) + triu(m, 2) + tril(m, k=-1)",
     lambda m: np.triu(m) + np.tril(m) + np.triu(m, 2) + np.tril(m, k=-1), "m"),
    ("tril(t, 1)", lambda t: np.tril(t, 1), "t"),
    ("triu(x)", lambda x: np.triu(x), "x"),
    ("diagonal(m)[:3] + diagonal(m, 1)[1:] + np.diagonal(m, offset=-1) * 2",
     lambda m: np.diagonal(m)[:3] + np.diagonal(m, 1)[1:] + np.diagonal(m, offset=-1) * 2, "m"),
    ("diagonal(t, 1, 0, 2)", lambda t: np.diagonal(t, 1, 0, 2), "t"),
    ("diag(m, 2) * 3", lambda m: np.diag(m, 2) * 3, "m"),
    ("diag(x, -2)[2:, :6] + diag(x[:4], 2)", lambda x: np.diag(x, -2)[2:, :6] + np.diag(x[:4], 2), "x"),
    ("trace(m) + trace(m, 1) + trace(t, -1, 1, 2)[1]",
     lambda m, t: np.trace(m) + np.trace(m, 1) + np.trace(t, -1, 1, 2)[1], "m", "t"),
    ("eye(4, 5, k=1) * m + eye(4, 5) * m + eye(4) @ m", lambda m: np.eye(4, 5, k=1) * m + np.eye(4, 5) * m + m,
     "m"),
    ("expand_dims(m, 1) + expand_dims(m, (0, -1))[0]", lambda m: np.expand_dims(m, 1) + np.expand_dims(m, (0, -1))[0],
     "m"),
    ("squeeze(t[:1, :, 2:3]) + squeeze(t[:1], axis=0)[:, 2]",
     lambda t: np.squeeze(t[:1, :, 2:3]) + np.squeeze(t[:1], axis=0)[:, 2], "t"),
    ("moveaxis(t, 0, -1) + np.moveaxis(t, [0, 1], [2, 0])",
     lambda t: np.moveaxis(t, 0, -1) + np.moveaxis(t, [0, 1], [2, 0]), "t"),
    ("moveaxis(t, [2, 0], [0, 1])", lambda t: np.moveaxis(t, [2, 0], [0, 1]), "t"),
    ("swapaxes(t, 0, 2)", lambda t: np.swapaxes(t, 0, 2), "t"),
    ("rollaxis(t, 2) + rollaxis(t, 2, 0)", lambda t: np.rollaxis(t, 2) + np.rollaxis(t, 2, 0), "t"),
    ("rollaxis(t, 0, 2)", lambda t: np.rollaxis(t, 0, 2), "t"),
    ("ravel(m) + np.ravel(m)", lambda m: 2 * np.ravel(m), "m"),
    ("atleast_2d(x) + atleast_3d(x) + atleast_1d(x[0])[0]",
     lambda x: np.atleast_2d(x) + np.atleast_3d(x) + np.atleast_1d(x[0])[0], "x"),
    ("atleast_3d(m) + atleast_2d(m)[:, :, None]", lambda m: np.atleast_3d(m) + np.atleast_2d(m)[:, :, None], "m"),
    ("a, b = split(x, 2)\na * b", lambda x: x[:3] * x[3:], "x"),
    ("p = array_split(x, 4)\nconcat([p[0] * 2, p[3], p[1]])",
     lambda x: np.concatenate([np.array_split(x, 4)[0] * 2, np.array_split(x, 4)[3], np.array_split(x, 4)[1]]),
     "x"),
    ("p = split(m, [1, 3], axis=1)\np[2] - p[0]", lambda m: np.split(m, [1, 3], axis=1)[2] - np.split(m, [1, 3], 1)[0],
     "m"),
    ("a, b = hsplit(m[:, 1:], 2)\n(a @ b.T)[:2] + vsplit(m[:, :4], 2)[1]", lambda m: (
        np.hsplit(m[:, 1:], 2)[0] @ np.hsplit(m[:, 1:], 2)[1].T)[:2] + np.vsplit(m[:, :4], 2)[1], "m"),
    ("dsplit(t[:, :, 1:], 2)[1]", lambda t: np.dsplit(t[:, :, 1:], 2)[1], "t"),
    ("take(x, [0, 5, -1, 2]) + take(m, [1, 19, 3, 3])", lambda x, m: np.take(x, [0, 5, -1, 2]) +
     np.take(m, [1, 19, 3, 3]), "x", "m"),
    ("take(m, 2, axis=1) + take(m, [[0, 1], [3, 3]], axis=1)[:, 0, 1]",
     lambda m: np.take(m, 2, axis=1) + np.take(m, [[0, 1], [3, 3]], axis=1)[:, 0, 1], "m"),
    ("linspace(x[0], x[1], 5) + linspace(0, 1, 5) + linspace(-2, 3, 5, endpoint=False)",
     lambda x: np.linspace(x[0], x[1], 5) + np.linspace(0, 1, 5) + np.linspace(-2, 3, 5, endpoint=False), "x"),
    ("linspace(x[:2], x[2:4], 4)", lambda x: np.linspace(x[:2], x[2:4], 4), "x"),
    ("full((2, 3), x[0]) + full(3, 2.5) + full_like(m, 2)[:2, :3]",
     lambda x, m: np.full((2, 3), x[0]) + np.full(3, 2.5) + np.full_like(m, 2)[:2, :3], "x", "m"),
    ("zeros_like(m) + ones_like(m) * m", lambda m: np.zeros_like(m) + np.ones_like(m) * m, "m"),
    ("select([x < -0.5, x < 0.5], [x * x, x], default=1 - x)",
     lambda x: np.select([x < -0.5, x < 0.5], [x * x, x], default=1 - x), "x"),
    ("clip(x, a_min=-0.3) + clip(x, a_max=0.2) + clip(x, 0.5, -0.5) + np.clip(x, -0.4, 0.6)",
     lambda x: np.clip(x, -0.3, None) + np.clip(x, None, 0.2) + np.clip(x, 0.5, -0.5) + np.clip(x, -0.4, 0.6), "x"),
    ("np.broadcast_to(x, (2, 6)) + broadcast_to(m[:, :1], (4, 6))[:2]",
     lambda x, m: np.broadcast_to(x, (2, 6)) + np.broadcast_to(m[:, :1], (4, 6))[:2], "x", "m"),
    ("np.append(m, x[:5]) + 1", lambda m, x: np.append(m, x[:5]) + 1, "m", "x"),
    ("append(m, m[:1], axis=0) * 2", lambda m: np.append(m, m[:1], axis=0) * 2, "m"),
    ("diagflat(m[:2, :2], -1)", lambda m: np.diagflat(m[:2, :2], -1), "m"),
    ("sum(m, 0) + mean(m, 0) + np.max(m, 0)", lambda m: np.sum(m, 0) + np.mean(m, 0) + np.max(m, 0), "m"),
]


SPELLED = NAMESPACED + METHODS + INDEXING + LAYOUT


@pytest.mark.parametrize("case", SPELLED, ids=[c[0] for c in SPELLED])
def test_numpy_spelling_matches_numpy(case):
    dsl, f, *names = case
    check(dsl, f, *names)


@pytest.mark.parametrize("dsl,f,constants", GATHERS, ids=[g[0] for g in GATHERS])
def test_mixed_basic_and_advanced_indexing_by_constants(dsl, f, constants):
    check(dsl, f, "t", constants=constants)


MASK6 = np.array([True, False, True, True, False, True])
MASK45 = M > 0.1
MASKS = [  # boolean constants as masks: numpy's result shapes, alone and mixed with other indices
    ("x[k]", lambda x, k: x[k], "x", {"k": MASK6}),
    ("sum(x[k] ** 2) * x[~k][0]", lambda x, k: np.sum(x[k] ** 2) * x[~k][0], "x", {"k": MASK6}),
    ("m[k]", lambda m, k: m[k], "m", {"k": MASK45}),
    ("m[k[:, 0]]", lambda m, k: m[k[:, 0]], "m", {"k": MASK45}),
    ("t[1, k] + t[0][k]", lambda t, k: t[1, k] + t[0][k], "t", {"k": MASK45}),
    ("t[:, k[:, 0]] + t[:, :, k[0]].sum()", lambda t, k: t[:, k[:, 0]] + t[:, :, k[0]].sum(), "t", {"k": MASK45}),
    ("t[:, k, None]", lambda t, k: t[:, k, None], "t", {"k": np.array([False, True, True, False])}),
    ("t[..., k]", lambda t, k: t[..., k], "t", {"k": np.array([True, False, False, True, True])}),
    ("t[i, :, k]", lambda t, i, k: t[i, :, k], "t", {"i": np.array([2, 0]), "k": np.array([1, 0, 0, 1, 0], bool)}),
    ("def f(a, b):\n    return a[b] * 2\nf(x, k)", lambda x, k: x[k] * 2, "x", {"k": MASK6}),
    ("x[k]", lambda x, k: x[k], "x", {"k": np.zeros(6, bool)}),
    ("sum(where(k, x, 0)) + x[j].sum()", lambda x, k, j: np.sum(np.where(k, x, 0)) + x[j].sum(), "x",
     {"k": MASK6, "j": ~MASK6}),
]


@pytest.mark.parametrize("dsl,f,name,constants", MASKS, ids=[c[0] for c in MASKS])
def test_boolean_constants_index_as_numpy_masks(dsl, f, name, constants):
    check(dsl, f, name, constants=constants)


def test_a_mask_constant_is_in_the_tape_key_and_where_alone_is_not():
    """Two masks of one shape and different True entries: each answers its own shape and values (the
    second is not the first one's cached tape); a mask only used by where() keeps one tape."""
    from derivd.cache.keys import TapeKey
    from derivd.core.prepare import input_specs
    from tests.dsl.support import service

    for k in (MASK6, ~MASK6, np.ones(6, bool)):
        got = call("gradient", "sum(x[k] ** 3)", {"x": X}, {"k": k})
        assert_close(got["value"], np.sum(X[k] ** 3), 1e-12)
        assert_close(got["gradient"]["x"], np.where(k, 3 * X ** 2, 0.0), 1e-12)
    settings = service().settings

    def key(dsl, k):
        return TapeKey.for_program(dsl, input_specs({"x": X}, {"k": k}, settings, dsl)).render()

    assert key("x[k]", MASK6) != key("x[k]", ~MASK6)
    assert key("where(k, x, 0)", MASK6) == key("where(k, x, 0)", ~MASK6)


def test_take_along_axis_with_constant_indices():
    idx = np.argsort(M, axis=1)
    check("take_along_axis(m, i, axis=1)", lambda m, i: np.take_along_axis(m, i, axis=1), "m", constants={"i": idx})
    i0 = np.array([[0, 3, 1, 1, 2]])
    check("take_along_axis(m, i, 0)", lambda m, i: np.take_along_axis(m, i, 0), "m", constants={"i": i0})


@pytest.mark.parametrize("dsl,constants,what", [
    ("np.det(m)", {}, "np.linalg.det"),
    ("np.histogram(x)", {}, "numpy's `histogram` is not part of the language"),
    ("np.fft.fft(x)", {}, "real-valued"),
    ("real(x)", {}, "real-valued"),
    ("x.imag", {}, "real-valued"),
    ("angle(x)", {}, "real-valued"),
    ("sni(x)", {}, "did you mean `sin`"),
    ("sum(x) + sni", {}, "did you mean `sin`"),
    ("x.shap", {}, "did you mean `shape`"),
    ("x.sin()", {}, "call sin(x)"),
    ("x.argsort()", {}, "numpy's method .argsort() is not part of the language"),
    ("np.sin", {}, "call it"),
    ("np.cosh(x).summ()", {}, "did you mean `sum`"),
    ("where(x > 0)", {}, "returns indices"),
    ("scipy.linalg.cholesky(m)", {}, "upper factor"),
    ("x.astype(int)", {}, "float only"),
    ("2j * x", {}, "real-valued"),
    ("k = x > 0\nx[k]", {}, "where(mask, x, 0)"),
    ("x[i & (x > 0)]", {"i": np.array([True, False, True, False, True, False])}, "where(mask, x, 0)"),
    ("k = i\nx[k]", {"i": np.array([True, False, True, False, True, False])}, "index with its name (x[mask])"),
    ("x[i]", {"i": np.array([True, False])}, "does not match"),
    ("x[i]", {"i": np.array(True)}, "a boolean is not an index"),
    ("m[i, i]", {"i": np.array([1, 6])}, "index 6"),
    ("pad(x, 1, mode='median')", {}, "not supported"),
    ("split(x, 4)", {}, "equal sections"),
    ("take(x, [6])", {}, "index 6"),
    ("y = x * 2\ny[0] = 1.0\nsum(y)", {}, "where(arange(len(y)) == i, v, y)"),
])
def test_refusals_say_what_is_missing(dsl, constants, what):
    with pytest.raises(DerivdError) as e:
        call("evaluate", dsl, {"x": X, "m": M}, constants)
    assert 400 <= e.value.status < 500
    assert what in e.value.message, e.value.message


@pytest.mark.parametrize("field,name", [("at", "e"), ("at", "pi"), ("constants", "sin"), ("at", "np"),
                                        ("at", "absolute"), ("constants", "float")])
def test_an_input_named_like_a_builtin_is_refused_naming_it(field, name):
    at, constants = {"x": X}, {}
    (at if field == "at" else constants)[name] = np.array(2.0)
    with pytest.raises(DerivdError) as e:
        call("gradient", "sum(x)", at, constants)
    assert 400 <= e.value.status < 500
    assert repr(name) in e.value.message and field in e.value.message


SECOND_ORDER = [
    ("pad(x, (2, 3), mode='reflect')", lambda x: np.pad(x, (2, 3), mode="reflect")),
    ("roll(tile(x, 2), 3)", lambda x: np.roll(np.tile(x, 2), 3)),
    ("x[[0, 2, 2, -1]]", lambda x: x[[0, 2, 2, -1]]),
    ("reshape(x, (2, 3))[[1, 0, 1], [2, 2, 0]]", lambda x: np.reshape(x, (2, 3))[[1, 0, 1], [2, 2, 0]]),
    ("diag(x, 1)", lambda x: np.diag(x, 1)),
    ("triu(reshape(x, (2, 3)), 1) + repeat(x, 2)[:6].reshape(2, 3)",
     lambda x: np.triu(x.reshape(2, 3), 1) + np.repeat(x, 2)[:6].reshape(2, 3)),
]


@pytest.mark.parametrize("dsl,f", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
def test_hessians_and_taylor_coefficients_of_layout_maps(dsl, f):
    """For a linear map P (numpy's, applied to the identity's columns), g(x) = sum(w * P(x)**2) has the
    Hessian 2 P^T diag(w) P, and along v its Taylor coefficients are g(x), 2 sum(w P x P v), sum(w (P v)**2)."""
    n = X.size
    P = np.stack([np.ravel(f(e)) for e in np.eye(n)], axis=1)
    w = RNG.normal(size=P.shape[0])
    v = RNG.normal(size=n)
    program = f"y = ravel({dsl})\nsum(w * y * y)"
    hessian = np.asarray(call("hessian", program, {"x": X}, {"w": w})["hessian"])
    np.testing.assert_allclose(hessian, 2 * P.T @ np.diag(w) @ P, rtol=1e-12, atol=1e-12)
    coefficients = np.ravel(call("taylor", program, {"x": X}, {"w": w}, v={"x": v}, order=3)["coefficients"])
    px, pv = P @ X, P @ v
    np.testing.assert_allclose(coefficients, [np.sum(w * px * px), 2 * np.sum(w * px * pv), np.sum(w * pv * pv), 0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dsl,f", SECOND_ORDER, ids=[c[0] for c in SECOND_ORDER])
def test_sparsity_patterns_of_layout_maps_are_exact(dsl, f):
    """Each output entry of a layout map reads exactly the input entries numpy's map copies into it
    (triu's mask is a `where`, whose pattern is elementwise: there, a superset)."""
    from tests.transforms.test_sparsity import patterns
    n = X.size
    P = np.stack([np.ravel(f(e)) for e in np.eye(n)], axis=1)
    j, _ = patterns(f"ravel({dsl})", {"x": (n,)})
    _, h = patterns(f"y = ravel({dsl})\nsum(y * y)", {"x": (n,)})
    if "triu" in dsl:
        assert (j >= (P != 0)).all() and (h >= ((P.T @ P) != 0)).all()
    else:
        np.testing.assert_array_equal(j, P != 0)
        np.testing.assert_array_equal(h, (P.T @ P) != 0)


@pytest.mark.parametrize("seed", range(6))
def test_static_index_lists_match_numpy_as_slices_or_tables(seed):
    """Static index maps are joined strided slices when they are a few runs, a gather table otherwise:
    either way numpy's take, whatever the runs (ascending, descending, repeated, lone entries)."""
    rng = np.random.default_rng(seed)
    pieces = [np.arange(rng.integers(0, 6), rng.integers(0, 6)) % 6, rng.integers(-6, 6, size=3),
              np.arange(5, -1, -1)[: rng.integers(1, 7)], np.repeat(rng.integers(0, 6), 2)]
    index = [int(i) for i in np.concatenate([pieces[k] for k in rng.permutation(4)])]
    check(f"take(x, {index}) * x[{index}]", lambda x: np.take(x, index) * x[index], "x")
    check(f"roll(x, {seed - 3}) + pad(x, ({seed}, 7 - {seed}), mode='symmetric')[:6]",
          lambda x: np.roll(x, seed - 3) + np.pad(x, (seed, 7 - seed), mode="symmetric")[:6], "x")


@pytest.mark.parametrize("src, numpy_fn", [
    ("sum(x, axis=None)", lambda x: np.sum(x, axis=None)),
    ("np.var(x, axis=None, keepdims=True).sum()", lambda x: np.var(x, axis=None, keepdims=True).sum()),
    ("np.sum(np.clip(x, None, 0.5))", lambda x: np.sum(np.clip(x, None, 0.5))),
    ("np.linalg.norm(x, None)", lambda x: np.linalg.norm(x, None)),
])
def test_none_is_numpys_none_as_an_argument(src, numpy_fn):
    """``axis=None``, a None bound, ``ord=None``: a literal None argument means what it means to numpy."""
    x = np.array([[0.3, -1.2, 0.9], [2.0, 0.1, -0.4]])
    r = call("gradient", src, {"x": x})
    assert_close(r["value"], numpy_fn(x), rtol=1e-12)
    assert_close(r["gradient"]["x"], fd_jacobian(numpy_fn, {"x": x}).reshape(x.shape), rtol=1e-7)
