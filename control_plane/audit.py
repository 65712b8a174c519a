"""The centre's hash-chained audit: every request, confirmation, approval, signature, dispatch, outcome,
login, token or user change and refused request is one row, linked to the one before by its hash.

Why a chain and checkpoints: an edited or deleted row breaks the chain at that row, but cutting rows
off the end leaves a shorter chain that still links. So every ``every`` rows (and on demand) the
holder of the centre's Ed25519 key signs a checkpoint "the chain had reached seq N with hash H",
stored in the same database; :func:`verify` refuses a chain that ends before its last checkpoint.
Only rows written after the last checkpoint can be cut unseen; checkpointing often bounds that.

Appends are serialized by the one ``audit_head`` row: an append's first statement updates it, which
takes PostgreSQL's row lock (and, inside :func:`writing`, SQLite's write lock), so two appends can
never read the same head and fork the chain. The application has no update or delete path, and
the migration's triggers refuse both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from control_plane.errors import ControlError, ControlInputError
from control_plane.tables import AuditCheckpointRow, AuditHeadRow, AuditRow
from ops_agent.keys import SigningKey, TrustedKey

#: The prev_hash of the first row.
GENESIS = "0" * 64
#: What a row may record; anything else is a programming error, refused before writing.
KINDS = frozenset({"request", "confirmation", "approval", "signature", "dispatch", "outcome", "login", "token",
                   "user", "refused", "alert"})
#: Rows between automatic checkpoints (when the log holds the key).
DEFAULT_CHECKPOINT_EVERY = 100
#: Signed before a checkpoint's JSON, so a checkpoint signature can never be mistaken for a command's
#: (those sign DSSE's "DSSEv1 ..." pre-authentication encoding).
CHECKPOINT_DOMAIN = b"cinefleet-audit-checkpoint-v1\n"
_HEAD_ID = 1
_audit, _head, _checkpoints = AuditRow.__table__, AuditHeadRow.__table__, AuditCheckpointRow.__table__


class AuditBroken(ControlError):
    """Raised by ``cinefleet audit verify`` when the chain shows an edited, deleted or cut-off row."""


def canonical(value: Any) -> str:
    """The one JSON encoding hashed and stored: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(seq: int, at: float, actor: str, kind: str, subject: str, detail: str, prev_hash: str) -> str:
    """sha256 over the canonical bytes of a row's fields, ``detail`` as stored (already canonical JSON)."""
    body = canonical({"seq": seq, "at": at, "actor": actor, "kind": kind, "subject": subject, "detail": detail,
                      "prev_hash": prev_hash})
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def checkpoint_message(seq: int, chain_hash: str, at: float) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return CHECKPOINT_DOMAIN + canonical({"seq": seq, "hash": chain_hash, "at": at}).encode("utf-8")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the database's write lock from its first statement.

    On SQLite a transaction that reads before it writes cannot upgrade its lock while another writer
    commits (it fails at once, whatever the busy timeout), so it begins IMMEDIATE; PostgreSQL's row
    locks (the audit head, ``FOR UPDATE`` on a command) serialize what must be serialized.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    kind: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "kind": self.kind, "subject": self.subject,
                "detail": self.detail, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: float
    key_id: str


class AuditLog:
    """Appends rows to the chain and, when it holds the centre's key, signs checkpoints.

    Parameters:
        key: the centre's signing key; only the signer process has it. Without it no checkpoint is made here.
        every: make a checkpoint once this many rows follow the last one.
        clock: unix seconds now.
    """

    def __init__(self, key: SigningKey | None = None, every: int = DEFAULT_CHECKPOINT_EVERY,
                 clock: Callable[[], float] = time.time) -> None:
        if every < 1:
            raise ControlInputError(f"checkpoint every: value {every!r}: expected at least 1 row")
        self.key, self.every, self._clock = key, every, clock

    def append(self, connection: Connection, actor: str, kind: str, subject: str,
               detail: Mapping[str, Any] | None = None) -> AuditEntry:
        """Add one row in ``connection``'s transaction (so it commits or rolls back with what it records)."""
        if kind not in KINDS:
            raise ValueError(f"audit kind {kind!r}: expected one of {', '.join(sorted(KINDS))}")
        # The head update comes first: it is the lock that serializes appends.
        connection.execute(update(_head).where(_head.c.id == _HEAD_ID).values(seq=_head.c.seq + 1))
        seq, prev_hash = connection.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == _HEAD_ID)).one()
        text = canonical(dict(detail or {}))
        at = float(self._clock())
        digest = entry_hash(seq, at, actor, kind, subject, text, prev_hash)
        connection.execute(insert(_audit).values(seq=seq, at=at, actor=actor, kind=kind, subject=subject, detail=text,
                                                 prev_hash=prev_hash, hash=digest))
        connection.execute(update(_head).where(_head.c.id == _HEAD_ID).values(hash=digest))
        if self.key is not None and seq - last_checkpoint_seq(connection) >= self.every:
            self.checkpoint(connection)
        return AuditEntry(seq, at, actor, kind, subject, json.loads(text), prev_hash, digest)

    def checkpoint(self, connection: Connection) -> Checkpoint | None:
        """Sign the chain's head, after checking the rows since the last checkpoint; None when nothing is new.

        Raises:
            AuditBroken: the rows since the last checkpoint do not chain (nothing is signed over them).
        """
        if self.key is None:
            raise ControlError("audit checkpoint: this process does not hold the centre's key (the signer does)")
        connection.execute(update(_head).where(_head.c.id == _HEAD_ID).values(seq=_head.c.seq))  # the lock
        seq, head_hash = connection.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == _HEAD_ID)).one()
        since = last_checkpoint_seq(connection)
        if seq <= since:
            return None
        report = _walk(connection, None, start=since)
        if not report.ok or report.last_hash != head_hash:
            why = str(report) if not report.ok else "the head row does not match the chain"
            raise AuditBroken(f"audit checkpoint refused: {why}")
        at = float(self._clock())
        signature = self.key.sign(checkpoint_message(seq, head_hash, at))
        connection.execute(insert(_checkpoints).values(
            seq=seq, hash=head_hash, at=at, key_id=self.key.key_id,
            public_key=base64.b64encode(self.key.public_bytes).decode("ascii"),
            signature=base64.b64encode(signature).decode("ascii")))
        return Checkpoint(seq, head_hash, at, self.key.key_id)


def last_checkpoint_seq(connection: Connection) -> int:
    return int(connection.execute(select(func.coalesce(func.max(_checkpoints.c.seq), 0))).scalar_one())


def entries(connection: Connection, after: int = 0, limit: int = 100, kind: str | None = None) -> list[AuditEntry]:
    """Rows with seq > ``after`` in order (keyset pagination), optionally of one kind."""
    query = select(_audit).where(_audit.c.seq > after).order_by(_audit.c.seq).limit(limit)
    if kind is not None:
        query = query.where(_audit.c.kind == kind)
    return [AuditEntry(r.seq, r.at, r.actor, r.kind, r.subject, json.loads(r.detail), r.prev_hash, r.hash)
            for r in connection.execute(query)]


@dataclass(frozen=True)
class AuditReport:
    """What :func:`verify` found: ``ok``, or the first bad row (``bad_seq``) and why (``problem``)."""

    rows: int
    checkpoints: int
    last_seq: int
    last_hash: str
    last_checkpoint: int
    bad_seq: int | None = None
    problem: str | None = None
    keys: str = "recorded"

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if not self.ok:
            return f"audit chain broken at seq {self.bad_seq}: {self.problem}"
        unchecked = self.last_seq - self.last_checkpoint
        return (f"audit chain intact: {self.rows} rows, {self.checkpoints} signed checkpoints (last at seq "
                f"{self.last_checkpoint}, signatures checked against the {self.keys} key); {unchecked} rows after "
                "the last checkpoint")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "checkpoints": self.checkpoints, "last_seq": self.last_seq,
                "last_checkpoint": self.last_checkpoint, "bad_seq": self.bad_seq, "problem": self.problem,
                "keys": self.keys}


def _signature_problem(row: Any, key: TrustedKey | None) -> str | None:
    message = checkpoint_message(row.seq, row.hash, row.at)
    try:
        signature = base64.b64decode(row.signature, validate=True)
        if key is not None:
            if row.key_id != key.key_id:
                return f"checkpoint at seq {row.seq} is signed by key {row.key_id!r}; expected {key.key_id!r}"
            key.public_key.verify(signature, message)
        else:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(row.public_key, validate=True)).verify(signature,
                                                                                                        message)
    except (InvalidSignature, ValueError):
        return f"checkpoint at seq {row.seq}: its signature does not verify over (seq, hash, at)"
    return None


def _walk(connection: Connection, key: TrustedKey | None, start: int = 0) -> AuditReport:
    """Check rows after ``start`` (which must be a checkpointed seq, or 0) and the checkpoints among them."""
    checkpoints = {r.seq: r for r in connection.execute(select(_checkpoints).where(_checkpoints.c.seq >= start))}
    last_checkpoint = max(checkpoints, default=0)
    keys = "given" if key is not None else "recorded"
    prev = GENESIS
    if start:
        anchor = connection.execute(select(_audit.c.hash).where(_audit.c.seq == start)).scalar_one_or_none()
        prev = anchor if anchor is not None else ""
    expected, rows = start + 1, 0

    def broken(seq: int, problem: str) -> AuditReport:
        return AuditReport(rows, len(checkpoints), expected - 1, prev, last_checkpoint, seq, problem, keys)

    if start and (start not in checkpoints or checkpoints[start].hash != prev):
        return broken(start, f"row {start} does not match its checkpoint")
    for row in connection.execute(select(_audit).where(_audit.c.seq > start).order_by(_audit.c.seq))\
            .yield_per(1000):
        if row.seq != expected:
            return broken(expected, f"row {expected} is missing (the next row is seq {row.seq})")
        if row.prev_hash != prev:
            return broken(row.seq, f"prev_hash {row.prev_hash[:16]}... does not match row {row.seq - 1}'s hash "
                                   f"{prev[:16]}...")
        if entry_hash(row.seq, row.at, row.actor, row.kind, row.subject, row.detail, row.prev_hash) != row.hash:
            return broken(row.seq, "its hash does not match its content (the row was edited)")
        checkpoint = checkpoints.get(row.seq)
        if checkpoint is not None:
            if checkpoint.hash != row.hash:
                return broken(row.seq, "its hash differs from the one its signed checkpoint records")
            problem = _signature_problem(checkpoint, key)
            if problem is not None:
                return broken(row.seq, problem)
        prev, expected, rows = row.hash, expected + 1, rows + 1
    last_seq = expected - 1
    if last_checkpoint > last_seq:
        return broken(last_seq + 1, f"the chain ends at seq {last_seq} but a signed checkpoint records seq "
                                    f"{last_checkpoint}: rows were cut off the end")
    return AuditReport(rows, len(checkpoints), last_seq, prev, last_checkpoint, keys=keys)


def verify(engine: Engine, key: TrustedKey | None = None) -> AuditReport:
    """Walk the whole chain and every checkpoint; with ``key``, checkpoints must be signed by that key.

    Without ``key`` each checkpoint's signature is checked against the public key recorded beside it,
    which whoever can write the database could replace: pass the signer's public key file to rule that out.
    """
    with engine.connect() as connection:
        report = _walk(connection, key)
        if report.ok:
            head = connection.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == _HEAD_ID)).one_or_none()
            if head is not None and (head.seq, head.hash) != (report.last_seq, report.last_hash):
                return AuditReport(report.rows, report.checkpoints, report.last_seq, report.last_hash,
                                   report.last_checkpoint, report.last_seq + 1,
                                   f"the head row records seq {head.seq}, but the chain ends at seq "
                                   f"{report.last_seq}: rows were cut off the end", report.keys)
        return report
