"""Arrays on the wire (CONTRACT §2), decoded and encoded with numpy, never element by element.

A value is a number, a nested list, or ``{"dtype", "shape", "data"}`` with
base64 little-endian bytes (decoded by ``core.request.array_from_bytes``, as
gRPC's arrays are). Responses use nested lists unless the request says
``"encoding": "base64"``. JSON has no inf or nan, so in list encoding a
non-finite float is written as the string "Infinity", "-Infinity" or "NaN"
(base64 carries them natively).
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np
import orjson

from derivd.core.request import array_from_bytes
from derivd.errors import ValidationFailed

NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan, "inf": math.inf,
             "-inf": -math.inf, "nan": math.nan}


def decode(value, where: str, integers: bool = False) -> np.ndarray:
    """A wire value -> ndarray: float64, or (``integers``) int64/bool kept for constants."""
    if isinstance(value, dict):
        return _decode_base64(value, where, integers)
    if isinstance(value, bool) and not integers:
        raise ValidationFailed(f"{where}: expected a number or array, got a boolean", field=where)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise ValidationFailed(f"{where}: arrays must be rectangular nested lists of numbers", field=where) from None
    kind = arr.dtype.kind
    if kind == "f":  # the common case: numbers only, as float64 already
        return arr.astype(np.float64, copy=False)
    if kind in "USO":
        arr = _with_nonfinite(value, where)
        kind = arr.dtype.kind
    if kind not in "biuf":
        raise ValidationFailed(f"{where}: arrays must hold numbers", field=where)
    if integers and kind in "biu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValidationFailed(f"{where}: integer too large for int64", field=where)
        return arr.astype(np.int64) if arr.dtype.kind != "b" else arr
    return arr.astype(np.float64, copy=False)  # a new array already: no second copy


def _with_nonfinite(value, where):
    def conv(v):
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, str):
            if v not in NONFINITE:
                raise ValidationFailed(f"{where}: {v!r} is not a number", field=where)
            return NONFINITE[v]
        if v is None:
            raise ValidationFailed(f"{where}: null is not a number", field=where)
        return v
    try:
        return np.asarray(conv(value), dtype=np.float64)
    except (ValueError, TypeError):
        raise ValidationFailed(f"{where}: arrays must be rectangular nested lists of numbers", field=where) from None


def _decode_base64(value: dict, where: str, integers: bool) -> np.ndarray:
    try:
        dtype, shape, data = value["dtype"], value["shape"], value["data"]
    except (KeyError, TypeError):
        raise ValidationFailed(f"{where}: an encoded array needs dtype, shape and data", field=where) from None
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise ValidationFailed(f"{where}: shape must be a list of non-negative ints", field=where)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ValidationFailed(f"{where}: data is not valid base64", field=where) from None
    return array_from_bytes(dtype, shape, raw, where, integers)


_AS_IS = frozenset((str, int, bool, type(None)))


def encode(value, base64_arrays: bool):
    """Prepare a response value for orjson: arrays as lists (or base64), recursively."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:  # a scalar answer ("value"): as numpy would write it, without a 0-d array
        return value if math.isfinite(value) else _nonfinite_list(value)
    if kind is np.ndarray and value.dtype == np.float64 and value.ndim and not base64_arrays:
        # the common answer: orjson writes a contiguous finite float64 array itself
        return np.ascontiguousarray(value) if _all_finite(value) else _nonfinite_list(value.tolist())
    if isinstance(value, dict):  # a string or an int as it is, without a call for each
        return {k: v if type(v) in _AS_IS else encode(v, base64_arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, base64_arrays) for v in value]
    if isinstance(value, np.ndarray) or isinstance(value, (np.floating, np.integer, float)):
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float64)
        if base64_arrays and arr.ndim > 0:
            name = "float64" if arr.dtype.kind == "f" else "int64"
            arr = arr.astype("<f8" if name == "float64" else "<i8")
            return {"dtype": name, "shape": list(arr.shape),
                    "data": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()}
        if arr.dtype.kind == "f" and not _all_finite(arr):
            return _nonfinite_list(arr.tolist())
        return np.ascontiguousarray(arr) if arr.ndim else arr.item()
    return value


def _all_finite(arr: np.ndarray) -> bool:
    """``np.isfinite(arr).all()`` without ``ndarray.all``'s Python wrapper (a microsecond a response)."""
    return bool(np.logical_and.reduce(np.isfinite(arr), axis=None))


def _nonfinite_list(v):
    if isinstance(v, list):
        return [_nonfinite_list(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return v


def dumps(body) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
