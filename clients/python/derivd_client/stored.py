"""What a client stored on the server: (program, constants) -> an id, so that a session opens by id.

A session's opening carries its function; with constants (a data set) those are
most of it: 1000 x 20 floats are 160 kB to encode, send and decode at every
``minimize``. The first opening of a program with constants asks the server to
store them (``SessionOpen.store`` on gRPC, ``POST /v1/functions`` on REST: the
same content-addressed store); the client remembers the id, and the next
opening of the same program with equal constants names that id and sends no
constants.

Equal means equal bytes, dtypes and shapes, compared with a private copy kept
here: comparing 160 kB costs ~10 µs, where hashing them costs ~110 µs (about
what sending them does on loopback), and an array changed in place is then a
different function, as it must be. The copies are bounded (``MAX_BYTES``, the
least recently used forgotten). A stored function the server no longer knows
(evicted, expired: 404 ``unknown_function`` naming an id remembered here) is
forgotten and the opening made again with the program and constants, which
stores them again (``GrpcClient.session``, ``UnarySession``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from . import arrays

MAX_BYTES = 256 * 1024 * 1024  # copies of constants kept per client


@dataclass
class Opening:
    """How to name a function in an opening: ``spec`` and the ``constants`` to send; ``store`` when
    the server is asked to store them (then ``key`` and ``data`` are what to remember its id under)."""

    spec: dict
    constants: dict
    key: tuple | None = None
    data: dict[str, bytes] = field(default_factory=dict)

    @property
    def store(self) -> bool:
        return self.key is not None


class StoredFunctions:
    """This client's stored functions: (program text, constants' names, dtypes, shapes) -> (id, bytes)."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[str, dict[str, bytes]]] = OrderedDict()
        self._bytes = 0

    def opening(self, spec: dict, constants: dict, always: bool = False) -> Opening:
        """``spec`` by its id when this program with these constants was stored, else as given (asking to
        store it when it is a program with constants, or any program with ``always``)."""
        if "dsl" not in spec or not (constants or always):
            return Opening(spec, constants)
        values = {name: arrays.as_array(v) for name, v in constants.items()}
        key = (spec["dsl"], tuple((name, a.dtype.str, a.shape) for name, a in sorted(values.items())))
        known = self._entries.get(key)
        if known is not None and all(values[name].tobytes() == data for name, data in known[1].items()):
            self._entries.move_to_end(key)
            return Opening({"id": known[0]}, {})
        return Opening(spec, constants, key, {name: a.tobytes() for name, a in values.items()})

    def remember(self, opening: Opening, function_id: str) -> None:
        """The id the server stored ``opening``'s function under (nothing if it was not stored)."""
        if not (opening.store and function_id):
            return
        size = sum(map(len, opening.data.values()))
        if size > self.max_bytes:
            return
        self._drop(opening.key)
        self._entries[opening.key] = (function_id, opening.data)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def forget(self, function_id) -> bool:
        """Forget ``function_id`` (the server no longer knows it); whether it was one of this client's."""
        keys = [key for key, (fid, _) in self._entries.items() if fid == function_id]
        for key in keys:
            self._drop(key)
        return bool(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= sum(map(len, entry[1].values()))


def unknown(error, stored: StoredFunctions) -> bool:
    """Whether ``error`` says the server lost a function this client stored (which is then forgotten)."""
    return getattr(error, "code", None) == "unknown_function" and stored.forget(error.detail.get("id"))
