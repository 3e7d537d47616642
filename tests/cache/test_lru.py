"""``BoundedLRU``: bounded in bytes and entries, least recently used out first, weights re-measured."""

from __future__ import annotations

from derivd.cache.lru import BoundedLRU


def test_bytes_bound_evicts_least_recently_used_first():
    lru = BoundedLRU(100, 1000, len)
    for key in "abcd":
        lru.put(key, "x" * 30)
    assert lru.nbytes == 90 and len(lru) == 3 and "a" not in lru  # a 4th 30-byte entry pushed out a
    assert lru.get("b") is not None  # b is now the most recent: c goes next
    lru.put("e", "y" * 30)
    assert "c" not in lru and {"b", "d", "e"} <= {k for k in "bde" if k in lru}
    lru.put("huge", "z" * 101)  # heavier than the whole bound: not kept, nothing evicted for it
    assert "huge" not in lru and len(lru) == 3 and lru.nbytes == 90


def test_entries_bound_and_growing_values_are_reweighed():
    lru = BoundedLRU(100, 2, len)
    for key in "abc":
        lru.put(key, [0])
    assert len(lru) == 2 and "a" not in lru
    grown = [0] * 60
    lru.put("g", grown)  # b out (entries); c and g: 61 bytes
    grown.extend([0] * 30)  # g grows in place to 90: the next store re-measures and evicts
    lru.put("h", [0] * 20)
    assert lru.nbytes <= 100 and "h" in lru
