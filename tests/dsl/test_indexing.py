"""Indexing: ints (negative too), stepped slices, x[:, j], .T, gathers by integer constant arrays
on any axis, index arithmetic; each against numpy, derivatives against finite differences of numpy.
A gather's vjp is a scatter-add: repeated indices accumulate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd.errors import DerivdError
from tests.dsl.support import call, check_against_numpy

X = np.array([0.5, -1.2, 2.0, 0.7, -0.3, 1.9, 0.4])
M = np.arange(20.0).reshape(4, 5) / 3 - 2
T = np.arange(24.0).reshape(2, 3, 4) / 5 - 1


@pytest.mark.parametrize("dsl,f,at", [
    ("x[-1] * x[0] + x[-7]", lambda x: x[-1] * x[0] + x[-7], {"x": X}),
    ("x[::2]", lambda x: x[::2], {"x": X}),
    ("x[::-1]", lambda x: x[::-1], {"x": X}),
    ("x[::-2]", lambda x: x[::-2], {"x": X}),
    ("x[5:1:-2]", lambda x: x[5:1:-2], {"x": X}),
    ("x[-2::-3]", lambda x: x[-2::-3], {"x": X}),
    ("x[1:-1:3]", lambda x: x[1:-1:3], {"x": X}),
    ("x[10:20]", lambda x: x[10:20], {"x": X}),
    ("m[:, 2]", lambda m: m[:, 2], {"m": M}),
    ("m[:, -1]", lambda m: m[:, -1], {"m": M}),
    ("m[1]", lambda m: m[1], {"m": M}),
    ("m[-1, 1:4]", lambda m: m[-1, 1:4], {"m": M}),
    ("m[::-1, ::2]", lambda m: m[::-1, ::2], {"m": M}),
    ("m.T[1]", lambda m: m.T[1], {"m": M}),
    ("m.T @ m", lambda m: m.T @ m, {"m": M}),
    ("t[1, :, -2]", lambda t: t[1, :, -2], {"t": T}),
    ("t[:, 1]", lambda t: t[:, 1], {"t": T}),
    ("t[-1][::-1][1]", lambda t: t[-1][::-1][1], {"t": T}),
    ("t.T", lambda t: t.T, {"t": T}),
])
def test_basic_indexing(dsl, f, at):
    check_against_numpy(dsl, f, at)


GATHER = {"i": np.array([2, 0, 3])}


@pytest.mark.parametrize("dsl,f,at,constants", [  # extension: None adds an axis, as numpy's newaxis
    ("x[None]", lambda x: x[None], {"x": X}, None),
    ("x[:, None] - x[None, :]", lambda x: x[:, None] - x[None, :], {"x": X}, None),
    ("sum((x[:, None] - x[None, :]) ** 2)", lambda x: np.sum((x[:, None] - x[None, :]) ** 2), {"x": X}, None),
    ("m[:, None, 1]", lambda m: m[:, None, 1], {"m": M}, None),
    ("m[1, None]", lambda m: m[1, None], {"m": M}, None),
    ("m[None, ::2, None, 1:]", lambda m: m[None, ::2, None, 1:], {"m": M}, None),
    ("t[None, 0, None]", lambda t: t[None, 0, None], {"t": T}, None),
    ("m[None, i]", lambda m, i: m[None, i], {"m": M}, GATHER),
    ("m[:, i, None]", lambda m, i: m[:, i, None], {"m": M}, GATHER),
])
def test_none_adds_an_axis_where_numpy_does(dsl, f, at, constants):
    check_against_numpy(dsl, f, at, constants)


def test_none_is_only_a_subscript():
    with pytest.raises(DerivdError) as e:
        call("evaluate", "x + None", {"x": X})
    assert e.value.status == 400 and "None" in e.value.message and e.value.detail["line"] == 1


IDX = np.array([3, 0, 3, -1, 3, 1])  # repeats and a negative index


@pytest.mark.parametrize("dsl,f,at", [
    ("x[i]", lambda x, i: x[i], {"x": X}),
    ("m[i]", lambda m, i: m[i], {"m": M}),  # rows, axis 0
    ("m[i, :]", lambda m, i: m[i, :], {"m": M}),
    ("m[:, i]", lambda m, i: m[:, i], {"m": M}),  # columns, axis 1
    ("m[1:, i]", lambda m, i: m[1:, i], {"m": M}),
    ("t[:, :, i]", lambda t, i: t[:, :, i], {"t": T}),  # last axis of a rank-3 array
    ("t[1][:, i]", lambda t, i: t[1][:, i], {"t": T}),
    ("t[:, 1:, i] * t[:, 1:, i]", lambda t, i: t[:, 1:, i] ** 2, {"t": T}),
    ("sum(x[i] * x[i])", lambda x, i: np.sum(x[i] ** 2), {"x": X}),
])
def test_gathers_on_any_axis_with_repeats(dsl, f, at):
    check_against_numpy(dsl, f, at, {"i": IDX % 4 - (IDX < 0)})


def test_gather_by_a_matrix_of_indices_and_scatter_add_accumulates():
    i = np.array([[0, 0], [2, 0]])
    check_against_numpy("m[i]", lambda m, i: m[i], {"m": M}, {"i": i})
    # d/dx sum(x[i]) counts how often each entry is taken: the scatter-add accumulates
    r = call("gradient", "sum(x[i])", {"x": X}, {"i": np.array([2, 2, 2, 0, -1, 2])})
    assert np.array_equal(r["gradient"]["x"], [1, 0, 4, 0, 0, 0, 1])
    r = call("gradient", "sum(m[:, i] * w)", {"m": M, "w": [1.0, 10.0, 100.0]}, {"i": np.array([1, 1, 4])})
    want = np.zeros_like(M)
    want[:, 1], want[:, 4] = 11.0, 100.0
    assert np.array_equal(r["gradient"]["m"], want)
    assert np.array_equal(r["gradient"]["w"], M[:, [1, 1, 4]].sum(axis=0))


def test_index_arithmetic_with_loop_variables():
    dsl = "s = 0\nfor i in range(1, len(x) - 1):\n    s = s + x[i - 1] * x[i + 1] - x[-i] * x[(2 * i) % 7] + x[i // 2]\ns"

    def f(x):
        s = 0.0
        for i in range(1, len(x) - 1):
            s = s + x[i - 1] * x[i + 1] - x[-i] * x[(2 * i) % 7] + x[i // 2]
        return s

    check_against_numpy(dsl, f, {"x": X})
    check_against_numpy("m[len(m) - 1, m.shape[1] - 2] + m[1:3, ::2][-1, 1]", lambda m: m[3, 3] + m[2, 2], {"m": M})


@pytest.mark.parametrize("dsl,constants,what", [
    ("x[7]", {}, "index 7"),
    ("x[-8]", {}, "index -8"),
    ("m[1, 5]", {}, "index 5"),
    ("x[i]", {"i": np.array([0, 7])}, "index 7"),
    ("x[i]", {"i": np.array([-8])}, "index -8"),
    ("m[:, i]", {"i": np.array([5])}, "index 5"),
    ("x[1.5]", {}, "integer"),
    ("x[f]", {"f": np.array([0.0, 1.0])}, "integers"),
    ("x[::0]", {}, "step"),
    ("x[1, 2]", {}, "too many indices"),
    ("m[i, j]", {"i": np.array([0, 1]), "j": np.array([0, 1, 2])}, "do not broadcast"),
    ("m[i, 0]", {"i": np.array([4])}, "index 4"),
    ("m[[0, 4], i]", {"i": np.array([0])}, "index 4"),
    ("m[[True, False]]", {}, "does not match"),
    ("x[x > 0]", {}, "where(mask, x, 0)"),
    ("x[..., ...]", {}, "single ellipsis"),
])
def test_out_of_range_and_bad_indices_are_4xx_naming_them(dsl, constants, what):
    with pytest.raises(DerivdError) as e:
        call("evaluate", dsl, {"x": X, "m": M, "t": T}, constants)
    assert 400 <= e.value.status < 500
    assert what in e.value.message
    assert e.value.to_body()["error"]["code"]


@settings(max_examples=40, deadline=None)
@given(st.integers(-9, 9), st.one_of(st.none(), st.integers(-9, 9)), st.one_of(st.none(), st.integers(-9, 9)),
       st.one_of(st.none(), st.integers(-4, 4).filter(lambda k: k != 0)))
def test_any_slice_matches_numpy_with_its_derivative(i, start, stop, step):
    """Hypothesis over slices: the values and the gradient of a weighted sum equal numpy's."""
    s = slice(start, stop, step)
    text = ":".join("" if v is None else str(v) for v in (start, stop, step))
    picked = X[s]
    weights = np.arange(1.0, picked.size + 1)
    if picked.size == 0:
        return
    r = call("gradient", f"sum(x[{text}] * w)", {"x": X, "w": weights})
    want = np.zeros_like(X)
    np.add.at(want, np.arange(X.size)[s], weights)
    assert np.array_equal(r["gradient"]["x"], want)
    assert r["value"] == pytest.approx(float(picked @ weights), rel=1e-14)
    if -7 <= i < 7:
        assert call("evaluate", f"x[{i}]", {"x": X})["value"] == X[i]
