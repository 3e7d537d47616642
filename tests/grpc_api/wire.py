"""Test-side encoding of derivd.v1 arrays, written from the proto's definition (not the server's converter)."""

from __future__ import annotations

import numpy as np

from derivd.grpc_api import derivd_pb2 as pb


def arr(x, dtype="float64") -> pb.Array:
    a = np.asarray(x, dtype={"float64": "<f8", "int64": "<i8", "bool": "|b1"}[dtype])
    return pb.Array(shape=list(a.shape), data=a.tobytes(), dtype=dtype)


def unarr(a: pb.Array) -> np.ndarray:
    dt = {"": "<f8", "float64": "<f8", "int64": "<i8"}[a.dtype]
    return np.frombuffer(a.data, dtype=dt).reshape(list(a.shape))


def fn(dsl: str) -> pb.Function:
    return pb.Function(dsl=dsl)
