"""The SDK's array codecs agree with the server's (an independent implementation) both ways,
for lists and base64, with non-finite numbers, integer and boolean arrays; spy's binning keeps
every nonzero."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from derivd.gateway import codecs as server_codecs
from derivd_client import arrays, spy

floats = hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
                    elements=st.floats(allow_nan=True, allow_infinity=True, width=64))
integers = hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=5),
                      elements=st.integers(-2**62, 2**62))


@settings(max_examples=200, deadline=None)
@given(floats, st.sampled_from([1, 10**9]))
def test_client_encoding_decodes_on_the_server(a, threshold):
    wire = json.loads(json.dumps(arrays.encode(a, threshold), allow_nan=False))  # strict JSON on the wire
    assert isinstance(wire, dict) == (a.ndim > 0 and a.size >= threshold)
    np.testing.assert_array_equal(server_codecs.decode(wire, "at.x"), a)


@settings(max_examples=200, deadline=None)
@given(floats, st.booleans())
def test_server_encoding_decodes_in_the_client(a, base64):
    wire = json.loads(server_codecs.dumps({"v": server_codecs.encode(a, base64)}))["v"]  # as the client reads it
    got = arrays.decode(wire)
    np.testing.assert_array_equal(np.asarray(got), a)
    assert np.shape(got) == a.shape


@settings(max_examples=100, deadline=None)
@given(integers, st.sampled_from([1, 10**9]))
def test_integer_constants_keep_their_kind(a, threshold):
    got = server_codecs.decode(arrays.encode(a, threshold), "constants.idx", integers=True)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, a)
    mask = a % 2 == 0
    np.testing.assert_array_equal(server_codecs.decode(arrays.encode(mask, threshold), "c.m", integers=True), mask)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_spy_bins_keep_every_nonzero(m, n, cells, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 40))
    rows, cols = rng.integers(0, m, k), rng.integers(0, n, k)
    grid, step = spy.binned(rows, cols, (m, n), max_rows=cells, max_cols=cells)
    assert grid.shape[0] <= cells and grid.shape[1] <= cells
    dense = np.zeros((grid.shape[0] * step, grid.shape[1] * step), dtype=bool)
    dense[rows, cols] = True
    reference = dense.reshape(grid.shape[0], step, grid.shape[1], step).any(axis=(1, 3))
    np.testing.assert_array_equal(grid, reference)
