"""Python values <-> the worker API's messages: arrays as raw bytes, the rest as a small tree.

A request or response of ``core.Service`` is a dict of numpy arrays, numbers,
strings, booleans, None, and lists and dicts of those. ``Value`` carries each
kind exactly (an int stays an int, a 0-d array stays an array), so what the
worker computes reaches the gateway's encoder as if it had been computed in
process. Arrays cost one copy into bytes and one ``frombuffer`` out.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.dispatch import worker_pb2 as pb

# The dtypes requests and responses hold; anything else is refused, not guessed.
DTYPES = {"<f8": np.float64, "<i8": np.int64, "|b1": np.bool_}


class CodecError(ValueError):
    pass


def encode(v) -> pb.Value:
    if v is None:
        return pb.Value(none=True)
    if isinstance(v, (bool, np.bool_)):
        return pb.Value(flag=bool(v))
    if isinstance(v, (int, np.integer)):
        return pb.Value(integer=int(v))
    if isinstance(v, (float, np.floating)):
        return pb.Value(number=float(v))
    if isinstance(v, str):
        return pb.Value(text=v)
    if isinstance(v, np.ndarray):
        return pb.Value(array=encode_array(v))
    if isinstance(v, dict):
        return pb.Value(struct=encode_struct(v))
    if isinstance(v, (list, tuple)):
        return pb.Value(list=pb.ValueList(items=[encode(x) for x in v]))
    raise CodecError(f"no wire form for a {type(v).__name__}")


def decode(m: pb.Value):
    kind = m.WhichOneof("kind")
    if kind == "array":
        return decode_array(m.array)
    if kind == "struct":
        return decode_struct(m.struct)
    if kind == "list":
        return [decode(x) for x in m.list.items]
    if kind in ("flag", "integer", "number", "text"):
        return getattr(m, kind)
    if kind == "none":
        return None
    raise CodecError("a value with no kind")


def encode_struct(d: dict) -> pb.Struct:
    return pb.Struct(keys=[str(k) for k in d], values=[encode(v) for v in d.values()])


def decode_struct(s: pb.Struct) -> dict:
    if len(s.keys) != len(s.values):
        raise CodecError(f"a struct of {len(s.keys)} keys and {len(s.values)} values")
    return {k: decode(v) for k, v in zip(s.keys, s.values)}


def encode_array(a: np.ndarray) -> pb.Array:
    dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dtype.str not in DTYPES:
        a = a.astype(np.float64)  # e.g. float32 from a library routine: the contract's arrays are float64
        dtype = a.dtype
    return pb.Array(dtype=dtype.str, shape=a.shape, data=np.ascontiguousarray(a, dtype=dtype).tobytes())


def decode_array(m: pb.Array) -> np.ndarray:
    dtype = DTYPES.get(m.dtype)
    if dtype is None:
        raise CodecError(f"array dtype {m.dtype!r} is not one of {sorted(DTYPES)}")
    shape = tuple(m.shape)
    if any(n < 0 for n in shape) or math.prod(shape) * np.dtype(dtype).itemsize != len(m.data):
        raise CodecError(f"array of shape {list(shape)} and dtype {m.dtype} does not hold {len(m.data)} bytes")
    return np.frombuffer(m.data, dtype=dtype).reshape(shape)
