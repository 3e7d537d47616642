"""The worker API's value tree: every kind comes back as itself; malformed arrays are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from derivd.dispatch import codec, worker_pb2 as pb

arrays = st.one_of(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)),
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
                    st.text(max_size=8))
values = st.recursive(scalars | arrays, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and \
            np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=6), values, max_size=5))
def test_every_value_comes_back_as_itself_through_the_wire(d):
    wire = pb.Struct.FromString(codec.encode_struct(d).SerializeToString())
    assert same(d, codec.decode_struct(wire))


def test_numpy_scalars_and_views_travel_as_plain_values():
    a = np.arange(12.0).reshape(3, 4)
    out = codec.decode_struct(codec.encode_struct({"t": a.T, "s": np.float64(2.5), "i": np.int64(7),
                                                   "b": np.bool_(True), "tuple": (1, 2), "f32": np.ones(2, np.float32),
                                                   "be": np.arange(3, dtype=">f8")}))
    np.testing.assert_array_equal(out["t"], a.T)
    assert out["s"] == 2.5 and type(out["s"]) is float
    assert out["i"] == 7 and type(out["i"]) is int
    assert out["b"] is True and out["tuple"] == [1, 2]
    assert out["f32"].dtype == np.float64 and out["be"].dtype == np.float64
    np.testing.assert_array_equal(out["be"], [0.0, 1.0, 2.0])


@pytest.mark.parametrize("array,reason", [
    (pb.Array(dtype="<f4", shape=[2], data=b"\0" * 8), "dtype"),
    (pb.Array(dtype="O", shape=[1], data=b"\0" * 8), "dtype"),
    (pb.Array(dtype="<f8", shape=[3], data=b"\0" * 16), "does not hold"),
    (pb.Array(dtype="<i8", shape=[2, -1], data=b""), "does not hold"),
])
def test_a_malformed_array_is_refused(array, reason):
    with pytest.raises(codec.CodecError, match=reason):
        codec.decode(pb.Value(array=array))


def test_something_without_a_wire_form_is_refused():
    with pytest.raises(codec.CodecError, match="set"):
        codec.encode({1, 2})
    with pytest.raises(codec.CodecError, match="keys and"):
        codec.decode_struct(pb.Struct(keys=["a", "b"], values=[pb.Value(none=True)]))
