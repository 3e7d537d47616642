"""Arrays on the wire (CONTRACT §2), both ways, with numpy.

A value travels as a number, a nested list, or an encoded array
``{"dtype", "shape", "data": base64 of little-endian bytes}``. Small arrays go
as lists (readable in logs); an array of ``threshold`` elements or more goes
as base64, which is exact, about 3x smaller than decimal text, and decoded
without a parse per element. JSON has no inf or nan: in list encoding they are
the strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"``, both ways.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 1024
WIRE = {"f": ("float64", "<f8"), "i": ("int64", "<i8"), "u": ("int64", "<i8"), "b": ("bool", "|b1")}
FROM_WIRE = {"float64": "<f8", "float32": "<f4", "int64": "<i8", "int32": "<i4", "bool": "|b1"}
NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def as_array(value: Any) -> np.ndarray:
    """A user's value as an ndarray: floats become float64; ints and bools keep their kind (index arrays)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"expected numbers, got an array of dtype {arr.dtype}")
    return arr.astype(np.float64) if arr.dtype.kind == "f" and arr.dtype != np.float64 else arr


def encode(value: Any, threshold: int = DEFAULT_THRESHOLD) -> Any:
    """A number or array for a request body: base64 at ``threshold`` elements or more, else lists."""
    arr = as_array(value)
    name, little = WIRE[arr.dtype.kind]
    if arr.ndim and arr.size >= threshold:
        data = np.ascontiguousarray(arr, dtype=little).tobytes()
        return {"dtype": name, "shape": list(arr.shape), "data": base64.b64encode(data).decode("ascii")}
    out = arr.tolist()
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        out = _nonfinite_to_strings(out)
    return out


def decode(value: Any) -> Any:
    """A response value -> numpy: encoded arrays and lists become ndarrays, numbers np.float64."""
    if isinstance(value, dict):
        dtype = FROM_WIRE[value["dtype"]]
        raw = base64.b64decode(value["data"])
        arr = np.frombuffer(raw, dtype=dtype).reshape(value["shape"])
        return arr.astype(arr.dtype.newbyteorder("="))
    if isinstance(value, str):
        return np.float64(NONFINITE[value])
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return np.float64(value)
    if isinstance(value, list):
        return np.asarray(_strings_to_nonfinite(value), dtype=np.float64)
    raise TypeError(f"not an array on the wire: {type(value).__name__}")


def decode_tree(value: Any) -> Any:
    """``decode`` applied through dicts of arrays ({name: array}) and left alone elsewhere."""
    if isinstance(value, dict) and not _is_encoded(value):
        return {k: decode_tree(v) for k, v in value.items()}
    if value is None or isinstance(value, bool) or (isinstance(value, str) and value not in NONFINITE):
        return value  # a label or flag beside the arrays (e.g. finite-difference details)
    return decode(value)


def to_jsonable(value: Any) -> Any:
    """numpy results back to plain JSON (lists; non-finite as strings), e.g. for ``--json`` output."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, float, int)) and not isinstance(value, bool):
        arr = np.asarray(value)
        out = arr.tolist()
        return _nonfinite_to_strings(out) if arr.dtype.kind == "f" else out
    return value


def _is_encoded(value: dict) -> bool:
    return set(value) == {"dtype", "shape", "data"}


def _nonfinite_to_strings(v):
    if isinstance(v, list):
        return [_nonfinite_to_strings(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return v


def _strings_to_nonfinite(v):
    if isinstance(v, list):
        return [_strings_to_nonfinite(x) for x in v]
    if isinstance(v, str):
        return NONFINITE[v]
    return v
