"""Stored programs (``POST /v1/functions``) shared through Redis, so any gateway resolves an id, or
without Redis through the data directory's store (``local_store``), so they survive restarts.

An entry is the program text, its input names and its constants, as JSON with
arrays in base64 (``{"dtype", "shape", "data"}``, little-endian), sealed like
tape entries and, in Redis, kept for ``function_ttl_s`` after its last use (each
read restarts the TTL). The id is a hash of the text and the constants, so the key
``<prefix>:function:<id>`` needs no version: the same program is the same
entry for every derivd version.
"""

from __future__ import annotations

import base64
import logging

import numpy as np
import orjson

from derivd.cache.local_store import LocalStore
from derivd.cache.redis_tier import RedisTier
from derivd.cache.signing import TamperedEntry

log = logging.getLogger("derivd.cache")

DTYPES = {"<f8", "<i8", "|b1"}


class FunctionStore:
    def __init__(self, tier: RedisTier | LocalStore, ttl_s: int):
        self.tier = tier
        self.ttl_s = ttl_s

    def key(self, fid: str) -> str:
        return f"{self.tier.prefix}:function:{fid}"

    def put(self, fid: str, dsl: str, inputs: list[str], constants: dict[str, np.ndarray]) -> bool:
        doc = {"dsl": dsl, "inputs": inputs, "constants": {k: _encode(v) for k, v in constants.items()}}
        return self.tier.set_sealed(self.key(fid), orjson.dumps(doc), self.ttl_s)

    def get(self, fid: str) -> tuple[str, list[str], dict[str, np.ndarray]] | None:
        """``(dsl, inputs, constants)`` of a stored id, or None (unknown, refused, or the store away)."""
        key = self.key(fid)
        try:
            payload = self.tier.get_sealed(key, refresh_ttl_s=self.ttl_s)
            if payload is None:
                return None
            doc = orjson.loads(payload)
            return doc["dsl"], list(doc["inputs"]), {k: _decode(v) for k, v in doc["constants"].items()}
        except (TamperedEntry, KeyError, TypeError, ValueError) as e:
            log.warning("stored function %s refused (%s)", key, e)
            return None


def _encode(arr: np.ndarray) -> dict:
    arr = np.ascontiguousarray(arr)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def _decode(doc: dict) -> np.ndarray:
    if doc["dtype"] not in DTYPES:
        raise ValueError(f"dtype {doc['dtype']!r}")
    return np.frombuffer(base64.b64decode(doc["data"]), dtype=doc["dtype"]).reshape(doc["shape"]).copy()
