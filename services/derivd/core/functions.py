"""Stored functions: a program (and its constants) kept under an id derived from its content.

The id is a hash of the text and the constants (dtype, shape, bytes), so storing
the same function twice gives the same id. They are kept in a shared store
(``cache.FunctionStore``): Redis when ``redis_url`` is set, so an id stored
through one gateway answers through all; else SQLite in ``data_dir``
(``cache.LocalStore``), so ids survive restarts and the gateway processes of
one machine share them. A registration the store did not take is refused (503
``store_unavailable`` with ``retry_after_s``), never answered with an id that
other gateways, or this one after a restart, would not know.

This process keeps the functions it stored or read in a ``BoundedLRU`` of at
most ``function_cache_bytes`` (text and constants): a forgotten one is read
from the store again; with no store (``data_dir`` "none"), the least recently
used are forgotten (404), as the deployed Redis does (``volatile-lru``: a
stored function has a TTL), instead of
memory growing with every registration. One function over the whole bound is
refused (413).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from derivd.cache import FunctionStore
from derivd.cache.lru import BoundedLRU
from derivd.dsl import free_inputs
from derivd.errors import DerivdError, LimitExceeded, NotFound, ValidationFailed

ENTRY_BYTES = 512  # a StoredFunction's own objects, beside its text and constants


@dataclass
class StoredFunction:
    id: str
    dsl: str
    inputs: list[str]
    constants: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return ENTRY_BYTES + len(self.dsl) + sum(np.asarray(c).nbytes for c in self.constants.values())


class Functions:
    """This process's stored functions, in front of the store's (``store``: a ``RedisTier``, a
    ``LocalStore``, or None to keep them in this process only)."""

    def __init__(self, settings, store):
        self.settings = settings
        self.local = BoundedLRU(settings.function_cache_bytes, 2**62, lambda f: f.nbytes)
        self.shared = FunctionStore(store, settings.function_ttl_s) if store else None

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
        limit = self.settings.function_cache_bytes
        if stored.nbytes > limit:
            raise LimitExceeded(f"the function and its constants take {stored.nbytes} bytes, over the limit "
                                f"function_cache_bytes={limit}", limit="function_cache_bytes",
                                value=stored.nbytes, max=limit)
        if self.shared is not None and not self.shared.put(fid, dsl, inputs, stored.constants):
            wait = max(1.0, self.shared.tier.retry_in_s)
            raise DerivdError(f"the function could not be stored where every gateway finds it "
                              f"({self.shared.tier.down}); retry in {wait:.0f} s", code="store_unavailable",
                              status=503, retry_after_s=round(wait, 3))
        self.local.put(fid, stored)
        return stored

    def get(self, fid: str) -> StoredFunction:
        stored = self.local.get(fid)
        if stored is None and self.shared is not None:  # stored through another gateway
            shared = self.shared.get(fid)
            if shared is not None:
                stored = StoredFunction(fid, *shared)
                self.local.put(fid, stored)
        if stored is None:
            raise NotFound(f"unknown function id {fid!r}", code="unknown_function", id=fid)
        return stored


def describe(stored: StoredFunction) -> dict[str, Any]:
    return {"id": stored.id, "dsl": stored.dsl, "inputs": stored.inputs, "constants": sorted(stored.constants)}
