"""The skin-neutral request: what REST and gRPC both decode a call into, before any checking.

``Request`` holds a call's fields with its arrays already numpy arrays, as the
skins decoded them; it is also what travels to a worker process
(``dispatch.codec``). Arrays arrive in a wire dtype (``WIRE_DTYPES``) as raw
little-endian bytes in both skins (REST's base64 form, gRPC's ``Array``):
``array_from_bytes`` is the one decoder of those; its copy is aligned for tier 2
(``allocator.aligned``). Everything a request means
beyond that (names, shapes, directions, limits) is checked once, by
``core.prepare``, after its function is resolved and before any engine runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from derivd.allocator import aligned
from derivd.errors import ValidationFailed

WIRE_DTYPES = {"float64": "<f8", "float32": "<f4", "int64": "<i8", "int32": "<i4", "bool": "|b1"}


def array_from_bytes(dtype: str, shape: list[int], raw: bytes, where: str, integers: bool = False) -> np.ndarray:
    """``prod(shape)`` little-endian elements of ``dtype`` -> ndarray: float64, or (``integers``, for
    constants) int64/bool kept. ``shape`` holds non-negative ints (each skin checks its own form)."""
    if dtype not in WIRE_DTYPES:
        raise ValidationFailed(f"{where}: dtype {dtype!r} is not one of {', '.join(WIRE_DTYPES)}", field=where)
    dt = np.dtype(WIRE_DTYPES[dtype])
    expected = math.prod(shape) * dt.itemsize
    if len(raw) != expected:
        raise ValidationFailed(f"{where}: data has {len(raw)} bytes; shape {shape} of {dtype} needs {expected}",
                               field=where)
    arr = np.frombuffer(raw, dtype=dt).reshape(shape)
    if integers and arr.dtype.kind in "biu":
        return aligned(arr, np.int64 if arr.dtype.kind != "b" else None)
    return aligned(arr, np.float64)


@dataclass
class Request:
    """A derivative request with its arrays already decoded to numpy."""

    function: dict
    at: dict[str, np.ndarray]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    wrt: list[str] | None = None
    mode: str = "auto"
    fd: dict | None = None
    verify: bool = False
    v: dict[str, np.ndarray] | None = None
    vs: list[dict[str, np.ndarray]] | None = None
    u: np.ndarray | None = None
    order: int | None = None
    sparse: bool = False
    deadline: float | None = None  # time.monotonic() instant after which work is abandoned
    pattern: dict | None = None  # a black box's Jacobian pattern {"rows", "cols"} given by the caller


@dataclass
class Timings:
    """Seconds spent compiling, waiting for a compute thread (set by the dispatcher) and computing."""

    compile: float = 0.0
    compute: float = 0.0
    queue: float = 0.0
