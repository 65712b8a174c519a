"""The agent's on-disk memory of command nonces and results, so that a restart reopens no replay.

A time window alone lets a captured command be replayed until it expires; remembering every nonce
until then closes that, provided the memory survives the agent (SQLite, ``synchronous=FULL``: a
nonce is on disk before the command runs). The same store keeps each command's result, keyed by
``command_id`` and the sha256 of its payload, so a resubmitted command returns its first result
instead of running twice. Rows are kept until a deadline the caller gives (the command's expiry
plus clock skew): after it the command cannot verify again, so the row is purged.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from protos import ops_agent_pb2

#: Length of a command nonce in bytes.
NONCE_BYTES = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, keep_until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_keep_until ON nonces (keep_until);
CREATE TABLE IF NOT EXISTS results (
    command_id TEXT NOT NULL,
    payload_sha256 BLOB NOT NULL,
    result BLOB NOT NULL,
    keep_until REAL NOT NULL,
    PRIMARY KEY (command_id, payload_sha256)
);
CREATE INDEX IF NOT EXISTS results_keep_until ON results (keep_until);
CREATE TABLE IF NOT EXISTS commands (command_id TEXT PRIMARY KEY, keep_until REAL NOT NULL);
"""


class NonceStore:
    """Seen nonces and stored results in one SQLite file; safe to share between threads and processes.

    Parameters:
        path: the database file (created with its folder when missing).
        clock: unix seconds now; rows whose ``keep_until`` has passed are purged and no longer count.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def check_and_remember(self, nonce: bytes, keep_until: float) -> bool:
        """Record ``nonce`` until ``keep_until``; True when it was new, False when already seen (a replay).

        The check and the insert are one write transaction, so two agents or threads racing with the
        same nonce see exactly one True. Expired nonces are purged in the same transaction.
        """
        with self._write() as db:
            db.execute("DELETE FROM nonces WHERE keep_until <= ?", (self._clock(),))
            return db.execute("INSERT OR IGNORE INTO nonces (nonce, keep_until) VALUES (?, ?)",
                              (nonce, keep_until)).rowcount == 1

    def claim_command(self, command_id: str, keep_until: float) -> bool:
        """Record ``command_id`` until ``keep_until``; True when no command claimed it before.

        A command id executes once: a second command signed with the same id (a new nonce, a
        new window) is refused, not run again. Its first result is returned only to the very
        same envelope (see :meth:`result_for`).
        """
        with self._write() as db:
            db.execute("DELETE FROM commands WHERE keep_until <= ?", (self._clock(),))
            return db.execute("INSERT OR IGNORE INTO commands (command_id, keep_until) VALUES (?, ?)",
                              (command_id, keep_until)).rowcount == 1

    def release(self, nonce: bytes, command_id: str) -> None:
        """Forget a nonce and command id that were claimed for a command that was then not executed."""
        with self._write() as db:
            db.execute("DELETE FROM nonces WHERE nonce = ?", (nonce,))
            db.execute("DELETE FROM commands WHERE command_id = ?", (command_id,))

    def result_for(self, command_id: str, payload_sha256: bytes) -> ops_agent_pb2.CommandResult | None:
        """The stored result of this exact command (same id and payload), or None."""
        with self._lock:
            row = self._db.execute("SELECT result FROM results WHERE command_id = ? AND payload_sha256 = ? "
                                   "AND keep_until > ?", (command_id, payload_sha256, self._clock())).fetchone()
        return None if row is None else ops_agent_pb2.CommandResult.FromString(row[0])

    def remember_result(self, command_id: str, payload_sha256: bytes, result: ops_agent_pb2.CommandResult,
                        keep_until: float) -> None:
        """Store the result of a command's first execution until ``keep_until``; a later one never replaces it."""
        with self._write() as db:
            db.execute("DELETE FROM results WHERE keep_until <= ?", (self._clock(),))
            db.execute("INSERT OR IGNORE INTO results (command_id, payload_sha256, result, keep_until) "
                       "VALUES (?, ?, ?, ?)", (command_id, payload_sha256, result.SerializeToString(), keep_until))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at BEGIN so that check-then-insert cannot interleave."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> NonceStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
