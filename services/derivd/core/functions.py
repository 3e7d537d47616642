"""Stored functions: a program (and its constants) kept under an id derived from its content.

The id is a hash of the text and the constants (dtype, shape, bytes), so storing
the same function twice gives the same id. With Redis (``cache.FunctionStore``)
the functions are shared by every gateway, so an id stored through one answers
through all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from derivd.cache import FunctionStore
from derivd.dsl import free_inputs
from derivd.errors import NotFound, ValidationFailed


@dataclass
class StoredFunction:
    id: str
    dsl: str
    inputs: list[str]
    constants: dict[str, np.ndarray]


class Functions:
    """This process's stored functions, in front of the shared ones (None without Redis)."""

    def __init__(self, settings, redis):
        self.settings = settings
        self.local: dict[str, StoredFunction] = {}
        self.shared = FunctionStore(redis, settings.function_ttl_s) if redis else None

    def register(self, dsl: str, constants: dict[str, np.ndarray] | None = None) -> StoredFunction:
        if not isinstance(dsl, str):
            raise ValidationFailed("function dsl must be a string")
        inputs = free_inputs(dsl, self.settings)
        constants = constants or {}
        digest = hashlib.sha256(dsl.encode())
        for name in sorted(constants):
            arr = constants[name]
            digest.update(f"|{name}|{arr.dtype.str}|{arr.shape}|".encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
        fid = digest.hexdigest()[:32]
        stored = StoredFunction(fid, dsl, inputs, dict(constants))
        self.local[fid] = stored
        if self.shared is not None:
            self.shared.put(fid, dsl, inputs, stored.constants)
        return stored

    def get(self, fid: str) -> StoredFunction:
        stored = self.local.get(fid)
        if stored is None and self.shared is not None:  # stored through another gateway
            shared = self.shared.get(fid)
            if shared is not None:
                stored = self.local[fid] = StoredFunction(fid, *shared)
        if stored is None:
            raise NotFound(f"unknown function id {fid!r}", code="unknown_function", id=fid)
        return stored


def describe(stored: StoredFunction) -> dict[str, Any]:
    return {"id": stored.id, "dsl": stored.dsl, "inputs": stored.inputs, "constants": sorted(stored.constants)}
