"""The embedded default's durable store: stored functions and black boxes in SQLite under ``data_dir``.

Without Redis, what callers register is kept in one SQLite file,
``<data_dir>/store.sqlite3``, so a restart forgets nothing, and the gateway
processes of ``derivd serve --gateways N`` see each other's registrations:
WAL mode lets readers go on while one process writes, and a writer waits up
to ``BUSY_TIMEOUT_S`` for another. Worker processes never open it (ids are
resolved by the gateway; black boxes are called from it).

Entries are sealed exactly as in Redis (``signing``): the MAC binds the row's
key and value, so a row altered on disk, copied under another key or written
without the key is refused (and logged by the reader), never served; black-box
headers are encrypted inside their entry as in Redis. The key is
``tape_cache_hmac_key`` when set, else a random one derivd writes once to
``<data_dir>/secret.key`` (mode 0600): set the former to keep the key off the
disk that holds the data.

Bounded in bytes: the rows' keys and values come to at most ``data_max_bytes``;
a write past it deletes the least recently used rows (stored, or read from
this file) until it fits, as Redis does under ``allkeys-lru``. SQLite reuses the
freed pages, so the file stays near the bound (plus page slack and the WAL).
TTLs are Redis's: here an entry stays until the bound evicts it.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from derivd.cache.signing import open_entry, seal
from derivd.errors import LimitExceeded

log = logging.getLogger("derivd.cache")

DB_FILE = "store.sqlite3"
KEY_FILE = "secret.key"
BUSY_TIMEOUT_S = 5.0

# The rows, least recently used first by the index; and their total, kept by triggers in the
# writing transaction, so the bound is checked in constant time whichever process wrote.
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, bytes INTEGER NOT NULL, used REAL NOT NULL, "
    "value BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used)",
    "CREATE TABLE IF NOT EXISTS total (bytes INTEGER NOT NULL)",
    "INSERT INTO total SELECT 0 WHERE NOT EXISTS (SELECT * FROM total)",
    "CREATE TRIGGER IF NOT EXISTS entry_added AFTER INSERT ON entries BEGIN "
    "UPDATE total SET bytes = bytes + new.bytes; END",
    "CREATE TRIGGER IF NOT EXISTS entry_removed AFTER DELETE ON entries BEGIN "
    "UPDATE total SET bytes = bytes - old.bytes; END",
    "CREATE TRIGGER IF NOT EXISTS entry_replaced AFTER UPDATE OF bytes ON entries BEGIN "
    "UPDATE total SET bytes = bytes - old.bytes + new.bytes; END",
]


class StoreUnavailable(RuntimeError):
    """The data directory cannot hold the store (not creatable, not writable, a damaged key file)."""


class LocalStore:
    prefix = "derivd"  # FunctionStore's keys, as under Redis
    retry_in_s = 0.0
    down = "the data directory could not be written"

    @classmethod
    def from_settings(cls, settings) -> "LocalStore | None":
        """The store in ``settings.data_dir``, or None when it is off ("none")."""
        if settings.data_path is None:
            return None
        key = settings.tape_cache_hmac_key
        return cls(settings.data_path, settings.data_max_bytes, key.get_secret_value().encode() if key else None)

    def __init__(self, directory: str, max_bytes: int, secret: bytes | None = None):
        self.path = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # one connection for the process's threads
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.secret = secret or _key(self.path / KEY_FILE)
            self._db = sqlite3.connect(self.path / DB_FILE, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable across a crash of the process
            with self._transaction():  # proves the file writable now, not at the first registration
                for statement in SCHEMA:
                    self._db.execute(statement)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"data directory {self.path} cannot hold the store ({e}); pass --data DIR "
                                   "(DERIVD_DATA_DIR) for another, or --data none to keep nothing") from None

    # ------------------------------------------------------------ rows (sqlite3.Error when the disk fails)

    def get(self, key: str) -> bytes | None:
        """The value at ``key`` (now the most recently used), or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
            if row is not None:
                self._db.execute("UPDATE entries SET used = ? WHERE key = ?", (time.time(), key))
        return None if row is None else bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` at ``key``, then evict the least recently used past the bound; a row over
        the whole bound is refused (413) rather than stored and evicted at once."""
        size = len(key.encode()) + len(value)
        if size > self.max_bytes:
            raise LimitExceeded(f"the entry takes {size} bytes, over the store's bound data_max_bytes="
                                f"{self.max_bytes}", limit="data_max_bytes", value=size, max=self.max_bytes)
        with self._lock, self._transaction():
            self._db.execute("INSERT INTO entries VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "bytes = excluded.bytes, used = excluded.used, value = excluded.value",
                             (key, size, time.time(), value))
            self._evict()

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, by key."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM entries WHERE substr(key, 1, ?) = ? ORDER BY key",
                                    (len(prefix), prefix)).fetchall()
        return [(k, bytes(v)) for k, v in rows]

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._db.execute("SELECT bytes FROM total").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ sealed, for FunctionStore (as RedisTier)

    def get_sealed(self, key: str, refresh_ttl_s: int | None = None) -> bytes | None:
        """The payload at ``key`` once its MAC checks (``TamperedEntry`` if not); None on a miss or when
        the disk fails (logged)."""
        try:
            entry = self.get(key)
        except sqlite3.Error as e:
            log.error("data store %s unreadable: %s", self.path, e)
            return None
        return None if entry is None else open_entry(self.secret, key, entry)

    def set_sealed(self, key: str, payload: bytes, ttl_s: int) -> bool:
        """Store sealed; False when the disk fails (logged)."""
        try:
            self.put(key, seal(self.secret, key, payload))
        except sqlite3.Error as e:
            log.error("data store %s not written: %s", self.path, e)
            return False
        return True

    def _evict(self) -> None:
        """Deletes the least recently used rows until the others fit the bound (the row just written,
        the most recent and within the bound alone, stays)."""
        excess = self._db.execute("SELECT bytes FROM total").fetchone()[0] - self.max_bytes
        doomed = []
        for key, size in self._db.execute("SELECT key, bytes FROM entries ORDER BY used"):
            if excess <= 0:
                break
            doomed.append((key,))
            excess -= size
        self._db.executemany("DELETE FROM entries WHERE key = ?", doomed)

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")  # the write lock now: waits (busy timeout) for another writer
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


def _key(path: Path) -> bytes:
    """The store's signing key in ``path``, made on first use. Written to a file of its own, then
    linked into place: of processes starting together one wins and all read the same whole key."""
    if not path.exists():
        fresh = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(fresh, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(fresh)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise OSError(f"{path} holds {len(key)} bytes, not a key: remove it to make a new one (entries signed "
                      "with the old key are then refused)")
    return key
