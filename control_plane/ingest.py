"""Replication ingest: a site's outbox batch applied to the fleet tables, exactly once and in order.

One batch is one transaction. Its first statement touches the site's row (``UPDATE``, then
``SELECT ... FOR UPDATE``): on PostgreSQL that row lock serializes every centre process pushing
for the same site, so two ``control serve`` processes on one database still apply each seq once
and in order; on SQLite the first write takes the database's write lock, which does the same.
Under the lock the cursor decides: events at or below it are duplicates and skipped, the next
one must be ``cursor + 1`` or nothing is applied (a gap), and the answer always names the seq
wanted next, so a site that lost its place resumes from the centre's word.

Events are full snapshots of a site row, so within a batch the last event of a key wins and
each table gets one bulk upsert. Readers ignore fields they do not know (a newer site) and
refuse a batch missing a field they need, naming the seq, entity and field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Integer, cast, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from control_plane.errors import ControlError
from control_plane.tables import (
    ArtifactRow,
    Base,
    CostDayRow,
    CostRow,
    QueueRow,
    RunRow,
    SiteHostRow,
    SiteRow,
    StageRow,
    WorkerRow,
)

#: Seconds over which a site's event rate is averaged (an exponentially decaying counter).
RATE_TAU_S = 10.0
#: Events one batch may carry; a shipper sends fewer.
MAX_BATCH_EVENTS = 5000
#: Runs whose cost days are recomputed in one statement (bounds the bound parameters of ``IN``).
ROLLUP_CHUNK = 500


class BatchRejected(ControlError):
    """Raised when a batch is malformed (seqs not consecutive, a field missing); nothing of it is applied."""


class Outcome(StrEnum):
    APPLIED = "applied"
    GAP = "gap"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Event:
    """One outbox row of a site, as it travels."""

    seq: int
    entity: str
    key: tuple[str, ...]
    op: str
    row: dict[str, Any]
    tenant_id: str
    committed_at: float | None = None


@dataclass(frozen=True)
class Batch:
    site_id: str
    events: Sequence[Event]
    site_head: int = 0


@dataclass(frozen=True)
class Ack:
    outcome: Outcome
    cursor: int
    applied: int = 0

    @property
    def next_seq(self) -> int:
        return self.cursor + 1


@dataclass(frozen=True)
class Entity:
    """How one outbox entity lands in a fleet table: its site key, and fields filled in when absent."""

    table: type[Base]
    site_key: tuple[str, ...]
    fill: Callable[[Event, dict[str, Any]], dict[str, Any]] = field(default=lambda _event, values: values)


def _run_fill(event: Event, values: dict[str, Any]) -> dict[str, Any]:
    if values.get("submitted_at") is None:  # a site from before submission times: its commit time orders it
        values["submitted_at"] = event.committed_at or 0.0
    return values


def _cost_fill(event: Event, values: dict[str, Any]) -> dict[str, Any]:
    values.setdefault("tenant_id", event.tenant_id)
    values["committed_at"] = event.committed_at
    return values


#: The entities the centre keeps; any other entity advances the cursor and is not stored.
ENTITIES: dict[str, Entity] = {
    "run": Entity(RunRow, ("run_id",), _run_fill),
    "stage": Entity(StageRow, ("run_id", "stage_id")),
    "worker": Entity(WorkerRow, ("name",)),
    "queue": Entity(QueueRow, ("name",)),
    "host": Entity(SiteHostRow, ("host",)),
    "artifact": Entity(ArtifactRow, ("tenant_id", "hash")),
    "cost": Entity(CostRow, ("run_id", "stage_id", "attempt"), _cost_fill),
}
_OPS = ("upsert", "insert", "delete")
_BOOKKEEPING = ("site_id", "replicated_seq", "updated_at", "committed_at")


def check(batch: Batch) -> None:
    """Refuse a batch no site would send: too big, seqs not consecutive, an unknown op."""
    if not batch.site_id:
        raise BatchRejected("site_id: empty; expected the pushing site's id")
    if len(batch.events) > MAX_BATCH_EVENTS:
        raise BatchRejected(f"events: {len(batch.events)} in one batch; expected at most {MAX_BATCH_EVENTS}")
    for before, after in zip(batch.events, batch.events[1:], strict=False):
        if after.seq != before.seq + 1:
            raise BatchRejected(f"event seq {after.seq} follows seq {before.seq}: expected consecutive seqs")
    for event in batch.events:
        if event.seq < 1:
            raise BatchRejected(f"event seq {event.seq}: expected a seq of 1 or more")
        if event.op not in _OPS:
            raise BatchRejected(f"event seq {event.seq}: op {event.op!r}: expected one of {', '.join(_OPS)}")


def _values(entity: Entity, event: Event, now: float, site_id: str) -> dict[str, Any]:
    """The fleet row an event describes; a required field that is missing refuses the batch."""
    columns = entity.table.__table__.columns
    values = {c.name: event.row[c.name] for c in columns if c.name in event.row and c.name not in _BOOKKEEPING}
    if event.op == "delete":
        values = dict(zip(entity.site_key, event.key, strict=False)) | values
    values = entity.fill(event, values)
    values |= {"site_id": site_id, "replicated_seq": event.seq, "updated_at": now}
    required = [c.name for c in columns if not c.nullable and c.name not in values]
    if required and event.op != "delete":
        raise BatchRejected(f"event seq {event.seq} ({event.entity}): field {required[0]!r} is missing; "
                            f"expected every field of a site {event.entity} row")
    return values


class Ingest:
    """Applies outbox batches to the fleet database; knows no transport (the gRPC servicer adapts it)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.clock = engine, clock
        self._upserts: dict[str, Any] = {}

    def apply(self, batch: Batch) -> Ack:
        """Apply ``batch`` in one transaction and say what the centre wants next.

        Raises:
            BatchRejected: the batch is malformed; nothing was applied.
        """
        check(batch)
        try:
            return self._apply(batch)
        except IntegrityError:
            # Two centres registered a new site at once: the other's row now exists; lock it and go on.
            return self._apply(batch)

    def cursor(self, site_id: str) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(SiteRow.cursor).where(SiteRow.site_id == site_id)) or 0

    def _apply(self, batch: Batch) -> Ack:
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            site = self._lock_site(session, batch.site_id, now)
            site.last_push_at = now
            site.site_head = max(site.site_head or 0, batch.site_head)
            new = [event for event in batch.events if event.seq > site.cursor]
            if batch.events and not new:
                return Ack(Outcome.DUPLICATE, site.cursor)
            if new and new[0].seq != site.cursor + 1:
                return Ack(Outcome.GAP, site.cursor)
            self._write(session, batch.site_id, new, now)
            if new:
                self._account(site, new, now)
            return Ack(Outcome.APPLIED, site.cursor, len(new))

    def _lock_site(self, session: Session, site_id: str, now: float) -> SiteRow:
        """The site's row, locked for this transaction (created at its first push)."""
        # A write first: SQLite takes its write lock here (a read first could not upgrade under a
        # concurrent writer), PostgreSQL the row lock that orders this site's batches.
        touched = session.execute(update(SiteRow).where(SiteRow.site_id == site_id).values(last_push_at=now))
        if not touched.rowcount:  # type: ignore[attr-defined]
            session.add(SiteRow(site_id=site_id, cursor=0, first_seen_at=now, last_push_at=now, site_head=0,
                                applied_total=0, events_per_s=0.0))
            session.flush()
        return session.execute(select(SiteRow).where(SiteRow.site_id == site_id).with_for_update()).scalar_one()

    def _account(self, site: SiteRow, new: Sequence[Event], now: float) -> None:
        site.cursor = new[-1].seq
        site.site_head = max(site.site_head, site.cursor)
        site.applied_total = (site.applied_total or 0) + len(new)
        committed = next((e.committed_at for e in reversed(new) if e.committed_at), None)
        if committed is not None:
            site.newest_committed_at = committed
            site.lag_s = max(0.0, now - committed)
        elapsed = max(0.0, now - site.rate_at) if site.rate_at is not None else math.inf
        site.events_per_s = (site.events_per_s or 0.0) * math.exp(-elapsed / RATE_TAU_S) + len(new) / RATE_TAU_S
        site.rate_at = now

    def _write(self, session: Session, site_id: str, events: Sequence[Event], now: float) -> None:
        """Upsert (or delete) each key's last state in this batch, one bulk statement per table and op."""
        last: dict[tuple[str, tuple[Any, ...]], tuple[str, dict[str, Any]]] = {}
        for event in events:
            entity = ENTITIES.get(event.entity)
            if entity is None:
                continue
            values = _values(entity, event, now, site_id)
            table = entity.table.__table__
            key = tuple(values.get(column.name) for column in table.primary_key.columns)
            last.pop((event.entity, key), None)  # re-inserted last: a key's final op runs after the others
            last[(event.entity, key)] = ("delete" if event.op == "delete" else "upsert", values)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for (name, _key), (op, values) in last.items():
            groups.setdefault((name, op), []).append(values)
        for (name, op), rows in groups.items():
            table = ENTITIES[name].table.__table__
            if op == "delete":
                for values in rows:
                    session.execute(delete(table).where(*(column == values[column.name]
                                                          for column in table.primary_key.columns)))
                continue
            self._upsert(session, table, rows)
        costs = {values["run_id"] for (name, _key), (_op, values) in last.items() if name == "cost"}
        if costs:
            roll_up_costs(session, site_id, costs)

    def _upsert(self, session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
        """One executemany of the table's upsert statement (built once per table: compiled once, cached)."""
        statement = self._upserts.get(table.name)
        if statement is None:
            insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
            keys = [column.name for column in table.primary_key.columns]
            statement = insert(table)
            statement = self._upserts[table.name] = statement.on_conflict_do_update(
                index_elements=keys, set_={c.name: statement.excluded[c.name] for c in table.columns
                                           if c.name not in keys})
        # Rows of one table can differ in which nullable fields they carry: fill the absent ones.
        names = [column.name for column in table.columns]
        session.execute(statement, [{name: row.get(name) for name in names} for row in rows])


def utc_day(committed_at: Any, dialect: str) -> Any:
    """The UTC day number of a commit time in SQL: SQLite has no floor() without its math extension,
    and its integer cast truncates (commit times are positive); PostgreSQL's cast rounds, so floor()."""
    days = committed_at / 86_400
    return cast(days, Integer) if dialect == "sqlite" else cast(func.floor(days), Integer)


def roll_up_costs(session: Session, site_id: str | None = None, run_ids: Collection[str] | None = None) -> None:
    """Recompute the cost days (:class:`CostDayRow`) of ``run_ids`` at ``site_id`` (every run when None).

    Recomputed from the raw cost rows rather than incremented, so the rollup equals their sums
    whatever a batch did: a replayed or duplicated event, a key sent twice in one batch, a delete.
    A run's attempts are a primary-key range of ``costs``, so this costs a few rows per run.
    """
    dialect = session.get_bind().dialect.name
    day = utc_day(CostRow.committed_at, dialect)
    chunks: list[list[str] | None] = [None] if run_ids is None else [
        sorted(run_ids)[i:i + ROLLUP_CHUNK] for i in range(0, len(run_ids), ROLLUP_CHUNK)]
    for chunk in chunks:
        old: list[ColumnElement[bool]] = []
        raw: list[ColumnElement[bool]] = [CostRow.committed_at.is_not(None)]
        if site_id is not None:
            old.append(CostDayRow.site_id == site_id)
            raw.append(CostRow.site_id == site_id)
        if chunk is not None:
            old.append(CostDayRow.run_id.in_(chunk))
            raw.append(CostRow.run_id.in_(chunk))
        session.execute(delete(CostDayRow).where(*old))
        sums = (select(CostRow.site_id, CostRow.run_id, day, func.min(CostRow.tenant_id), func.count(),
                       func.coalesce(func.sum(CostRow.compute_seconds), 0.0), func.coalesce(func.sum(CostRow.usd), 0.0))
                .where(*raw).group_by(CostRow.site_id, CostRow.run_id, day))
        session.execute(insert(CostDayRow).from_select(
            ["site_id", "run_id", "day", "tenant_id", "attempts", "compute_s", "usd"], sums))
