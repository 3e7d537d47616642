"""``BoundedLRU``: least recently used out first, bounded in bytes as well as in entries.

Every in-process cache that a caller can fill (compiled functions and their
tapes, stored functions) is one of these, so that memory follows the bound
in the settings whatever the requests: a few entries with 8 MB constants
weigh as much as thousands of small ones. An entry's weight is measured by
``weigh(value)`` when stored and again whenever the cache is over its bound
(a compiled function grows as transforms are compiled into it); an entry
heavier than the whole bound is handed back but not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable


class BoundedLRU:
    def __init__(self, max_bytes: int, max_entries: int, weigh: Callable[[object], int]):
        self.max_bytes, self.max_entries, self.weigh = max_bytes, max_entries, weigh
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        """The value at ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key, value) -> None:
        weight = self.weigh(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if weight > self.max_bytes:
                return
            self._items[key] = (value, weight)
            self._bytes += weight
            if self._bytes > self.max_bytes:
                self._reweigh()
            while self._items and (self._bytes > self.max_bytes or len(self._items) > self.max_entries):
                _, (_, w) = self._items.popitem(last=False)
                self._bytes -= w

    def _reweigh(self) -> None:
        self._bytes = 0
        for key, (value, _) in self._items.items():
            weight = self.weigh(value)
            self._items[key] = (value, weight)
            self._bytes += weight

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items
