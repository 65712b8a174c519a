"""The site database: runs, their stages, workers, queues, hosts, and the outbox.

The scheduler is the only writer. Every change to a replicated row goes through
:func:`site_scheduler.outbox.append` in the same transaction, so the outbox is the site's
history in commit order.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, Float, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    # Every mapped class here is declared with __tablename__, so its __table__ is a Table (the
    # base class types it as the wider FromClause, which has no typed primary key or insert).
    __table__: ClassVar[Table]


class RunRow(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    project_path: Mapped[str] = mapped_column(Text)
    project_hash: Mapped[str] = mapped_column(String(64))
    out_dir: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    episode: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_seq: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class StageRow(Base):
    __tablename__ = "stages"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    identity: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    depends_on: Mapped[list[str]] = mapped_column(JSON)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # the finishing attempt's run time
    cache_hits: Mapped[int | None] = mapped_column(Integer, nullable=True)  # reuse inside the stage (AAC chunks)
    cache_misses: Mapped[int | None] = mapped_column(Integer, nullable=True)


class WorkerRow(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    queues: Mapped[list[str]] = mapped_column(JSON)
    current_job: Mapped[str | None] = mapped_column(String(160), nullable=True)
    since: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # the process image's start
    #: The ffmpeg and espeak-ng builds the worker reported (tool -> build).
    builds: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    #: Why it takes no build-dependent stage: its builds differ from the site's pinned ones.
    refused: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: When its latest drain's in-flight work is requeued (unix seconds), kept here so that a drain
    #: put back after Redis lost its data keeps its deadline; None for a drain without one.
    drain_until: Mapped[float | None] = mapped_column(Float, nullable=True)


class QueueRow(Base):
    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    completed: Mapped[int] = mapped_column(Integer, default=0)


class HostRow(Base):
    __tablename__ = "hosts"

    host: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))


class PinnedBuildRow(Base):
    """A tool build the site pinned (``site_scheduler.builds``): workers with another take no media work."""

    __tablename__ = "pinned_builds"

    tool: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    build: Mapped[str] = mapped_column(Text)
    pinned_at: Mapped[float] = mapped_column(Float)


class OutboxRow(Base):
    __tablename__ = "outbox"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    site_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    key: Mapped[list[str]] = mapped_column(JSON)
    op: Mapped[str] = mapped_column(String(16))
    row: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Wall-clock unix seconds of the append (the control plane's replication lag); never hashed.
    committed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


#: The tables the outbox replicates, by entity name (registry rows travel too but are not replayed).
REPLICATED: dict[str, type[Base]] = {
    "run": RunRow,
    "stage": StageRow,
    "worker": WorkerRow,
    "queue": QueueRow,
    "host": HostRow,
}


def row_dict(row: Base) -> dict[str, Any]:
    """A row as JSON-ready values (timestamps as ISO 8601 text)."""
    values = {column.name: getattr(row, column.name) for column in type(row).__table__.columns}
    # JSON values are copied: the snapshot must not follow later changes made in place.
    return {key: value.isoformat() if isinstance(value, dt.datetime)
            else copy.deepcopy(value) if isinstance(value, dict | list) else value for key, value in values.items()}
