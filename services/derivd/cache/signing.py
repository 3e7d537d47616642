"""Signed cache entries: HMAC-SHA256 over the key and the payload, checked before decoding.

An entry is ``mac || payload`` with ``mac = HMAC-SHA256(secret, key || "\\n" || payload)``
(32 bytes). Binding the key into the MAC means a valid entry copied under
another key is refused too. ``open_entry`` compares in constant time and
hands back the payload only when the MAC matches, so nothing read from Redis
is parsed before it is known to be ours.
"""

from __future__ import annotations

import hashlib
import hmac

MAC_BYTES = hashlib.sha256().digest_size


class TamperedEntry(ValueError):
    """The entry's MAC does not match: written by someone without the key, or altered."""


def _mac(secret: bytes, key: str, payload: bytes) -> bytes:
    return hmac.new(secret, key.encode() + b"\n" + payload, hashlib.sha256).digest()


def seal(secret: bytes, key: str, payload: bytes) -> bytes:
    return _mac(secret, key, payload) + payload


def open_entry(secret: bytes, key: str, entry: bytes) -> bytes:
    """The payload of a sealed ``entry`` stored under ``key``; ``TamperedEntry`` if the MAC fails."""
    if len(entry) < MAC_BYTES:
        raise TamperedEntry(f"entry of {len(entry)} bytes is shorter than its MAC")
    mac, payload = entry[:MAC_BYTES], entry[MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, key, payload)):
        raise TamperedEntry("entry MAC does not match")
    return payload
