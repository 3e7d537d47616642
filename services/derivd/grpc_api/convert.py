"""Proto <-> core, in one place: arrays, requests, responses, errors.

An ``Array`` is ``prod(shape)`` little-endian elements packed in ``data``;
it becomes a numpy array without a per-element loop (``np.frombuffer``).
Requests become ``core.Request`` field for field; response dicts from
``Dispatcher.submit`` become messages by the proto's own field names, so an
endpoint gains a response field by adding it to the ``.proto`` alone.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
from pydantic import ValidationError

from derivd.core.request import Request, array_from_bytes
from derivd.core.schemas import FDOptions
from derivd.errors import DerivdError, ValidationFailed
from derivd.grpc_api import derivd_pb2 as pb

DTYPE_NAMES = {"<f8": "float64", "<i8": "int64", "|b1": "bool"}

# HTTP status of a DerivdError -> gRPC status code (CONTRACT §5: same code/message).
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(http_status: int) -> grpc.StatusCode:
    if http_status in STATUS:
        return STATUS[http_status]
    return grpc.StatusCode.INVALID_ARGUMENT if http_status < 500 else grpc.StatusCode.INTERNAL


def error_metadata(err: DerivdError) -> list[tuple[str, str | bytes]]:
    """Trailing metadata carrying the contract's error body next to the status."""
    body = pb.Error(code=err.code, message=err.message, detail_json=json.dumps(err.detail, default=str))
    return [("derivd-code", err.code), ("derivd-error-bin", body.SerializeToString())]


# ---------------------------------------------------------------- arrays

def to_numpy(a: pb.Array, where: str, integers: bool = False) -> np.ndarray:
    """An ``Array`` -> ndarray: float64, or (``integers``) int64/bool kept for constants."""
    shape = list(a.shape)
    if any(s < 0 for s in shape):
        raise ValidationFailed(f"{where}: shape {shape} has a negative extent", field=where)
    return array_from_bytes(a.dtype or "float64", shape, a.data, where, integers)


def to_array(x) -> pb.Array:
    arr = np.asarray(x)
    if arr.dtype.kind == "b":
        arr = arr.astype("|b1")
    elif arr.dtype.kind in "iu":
        arr = arr.astype("<i8")
    else:
        arr = arr.astype("<f8")
    return pb.Array(shape=arr.shape, data=np.ascontiguousarray(arr).tobytes(), dtype=DTYPE_NAMES[arr.dtype.str])


def arrays(m, where: str, integers: bool = False) -> dict[str, np.ndarray]:
    return {k: to_numpy(v, f"{where}.{k}", integers) for k, v in m.items()}


# ---------------------------------------------------------------- requests

def function(msg) -> dict:
    kind = msg.function.WhichOneof("kind") if msg.HasField("function") else None
    if kind is None:
        raise ValidationFailed("function is required: one of dsl, id or blackbox", field="function")
    return {kind: getattr(msg.function, kind)}


def mode(value: int) -> str:
    try:
        return pb.Mode.Name(value).removeprefix("MODE_").lower()
    except ValueError:  # a number this proto does not define (a newer client)
        raise ValidationFailed(f"unknown mode {value}", field="mode") from None


def fd_options(msg) -> dict | None:
    if not msg.HasField("fd"):
        return None
    fd = msg.fd
    raw = {"method": fd.method or "central", "order": fd.order or 2, "extrapolation": fd.extrapolation,
           "step": fd.step if fd.HasField("step") else None}
    try:
        return FDOptions.model_validate(raw).model_dump()
    except ValidationError as e:
        first = e.errors()[0]
        where = "fd." + ".".join(str(p) for p in first.get("loc", ()))
        raise ValidationFailed(f"invalid request: {where}: {first.get('msg')}", field=where) from None


def to_request(msg) -> Request:
    """Any unary request message (or ``HvpStreamStart``) -> ``core.Request``."""
    fields = msg.DESCRIPTOR.fields_by_name
    req = Request(
        function=function(msg), at=arrays(msg.at, "at"), constants=arrays(msg.constants, "constants", True),
        # protobuf maps have no order: an empty wrt means every input of `at` in sorted name order
        wrt=list(msg.wrt) or sorted(msg.at), mode=mode(msg.mode),
        fd=fd_options(msg) if "fd" in fields else None, verify=msg.verify if "verify" in fields else False,
    )
    if "v" in fields:
        req.v = arrays(msg.v, "v") if len(msg.v) else None
    if "u" in fields and msg.HasField("u"):
        req.u = to_numpy(msg.u, "u")
    if "order" in fields:
        req.order = msg.order
    if "sparse" in fields:
        req.sparse = msg.sparse
    return req


# ---------------------------------------------------------------- responses

def fill(msg, body: dict):
    """Set ``msg``'s fields from a response dict, by name; keys the proto lacks are left out."""
    fields = msg.DESCRIPTOR.fields_by_name
    for name, value in body.items():
        if name == "jacobian" and isinstance(value, dict):  # sparse: COO
            coo = msg.jacobian_coo
            coo.rows.extend(np.asarray(value["rows"]).tolist())
            coo.cols.extend(np.asarray(value["cols"]).tolist())
            coo.values.CopyFrom(to_array(value["values"]))
            coo.shape.extend(value["shape"])
            continue
        field = fields.get(name)
        if field is None or value is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            for k, v in value.items():
                target[k].CopyFrom(to_array(v))
        elif field.message_type is pb.Array.DESCRIPTOR and field.is_repeated:
            getattr(msg, name).extend(to_array(v) for v in value)
        elif field.message_type is pb.Array.DESCRIPTOR:
            getattr(msg, name).CopyFrom(to_array(value))
        elif field.message_type is not None:
            fill(getattr(msg, name), value)
        elif field.is_repeated:
            getattr(msg, name).extend(np.asarray(value).reshape(-1).tolist())
        elif field.type == field.TYPE_DOUBLE:
            setattr(msg, name, float(np.asarray(value).reshape(-1)[0]))
        else:
            setattr(msg, name, value)
    return msg


def timing(compile_s: float, queue_s: float, compute_s: float, tier: int | None = None) -> pb.Timing:
    """The durations and the compile tier that answered (the body's ``tier``; 0: tier 2 is off)."""
    return pb.Timing(compile_ms=compile_s * 1e3, queue_ms=queue_s * 1e3, compute_ms=compute_s * 1e3,
                     tier=tier or 0)


def answer_timing(timings, body: dict) -> pb.Timing:
    """``timing`` of a dispatcher's answer: its ``Timings`` and the tier its body names."""
    return timing(timings.compile, timings.queue, timings.compute, body.get("tier"))
