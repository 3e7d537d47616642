"""Signed cache entries: HMAC-SHA256 over the key and the payload, checked before decoding.

An entry is ``mac || payload`` with ``mac = HMAC-SHA256(secret, key || "\\n" || payload)``
(32 bytes). Binding the key into the MAC means a valid entry copied under
another key is refused too. ``open_entry`` compares in constant time and
hands back the payload only when the MAC matches, so nothing read from Redis
is parsed before it is known to be ours.

Secrets inside an entry (a black box's ``Authorization`` header) are also
encrypted: AES-256-GCM under a key derived from the same secret by HKDF-SHA256
with a purpose label, so one configured key serves both jobs without the MAC
key ever being used as a cipher key. Each ciphertext is ``nonce || ct+tag``
with a fresh 96-bit nonce and its entry's key as associated data, so it only
decrypts where it was written.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAC_BYTES = hashlib.sha256().digest_size
NONCE_BYTES = 12


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


def _cipher(secret: bytes, purpose: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"derivd {purpose}".encode()).derive(secret)
    return AESGCM(key)


def encrypt(secret: bytes, purpose: str, key: str, plaintext: bytes) -> bytes:
    """``plaintext`` encrypted for ``purpose`` (the key derivation's label) and bound to ``key``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher(secret, purpose).encrypt(nonce, plaintext, key.encode())


def decrypt(secret: bytes, purpose: str, key: str, blob: bytes) -> bytes:
    """The plaintext of an :func:`encrypt` result; ``TamperedEntry`` if it fails authentication."""
    try:
        return _cipher(secret, purpose).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], key.encode())
    except (InvalidTag, ValueError):
        raise TamperedEntry("encrypted field does not authenticate") from None
