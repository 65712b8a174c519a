"""The alert tables: alerts, their delivery outbox (notifications), every delivery attempt, and silences.

They share the fleet tables' declarative base, so one Alembic history (``0006_alerts``) creates
them and the API, the CLI and ``alerts serve`` read the same rows. Notifications are written in
the same transaction as the alert change that causes them: a restarted emitter finds what it still
owes in ``notifications`` (status ``pending``) and neither loses a resolve nor sends one twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from control_plane.tables import Base

_ID = BigInteger().with_variant(Integer, "sqlite")


class AlertRow(Base):
    """One alert: a condition of the fleet under its dedup key, from first sight to resolution."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_key", "key"), Index("ix_alerts_status", "status"),
                      Index("ix_alerts_last_seen", "last_seen"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    #: type + site + run + stage, or type + site + host (+ volume): repeats of one key are one alert.
    key: Mapped[str] = mapped_column(String(512))
    alert_type: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    #: pending | firing | acked | silenced | resolved
    status: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(128), nullable=True)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    summary: Mapped[str] = mapped_column(Text)
    #: The dashboard path that explains it (``/runs/SITE/RUN``, ``/hosts/SITE/HOST``, ``/``).
    link: Mapped[str] = mapped_column(String(512))
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    #: What made the last repeat distinct (a replicated seq, an attempt number): equal tokens are one event.
    occurrence: Mapped[str] = mapped_column(String(128))
    #: When the current episode began (a reopened alert starts a new one): the flap wait counts from here.
    opened_at: Mapped[float] = mapped_column(Float)
    notified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)
    #: Why it sends nothing now (a silence, a maintenance window, an inhibiting alert); "" when it may send.
    muted: Mapped[str] = mapped_column(Text, default="")
    acked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class NotificationRow(Base):
    """The delivery outbox: one message for one receiver; ``pending`` until its last attempt is recorded."""

    __tablename__ = "alert_notifications"
    __table_args__ = (Index("ix_alert_notifications_status", "status"),
                      Index("ix_alert_notifications_alert", "alert_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    #: None for ``alerts test`` messages, which belong to no alert.
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    receiver: Mapped[str] = mapped_column(String(64))
    #: firing | escalation | resolved | test
    event: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    click_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    ack_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: pending | sent | failed
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AttemptRow(Base):
    """One delivery attempt as the Deliverer reported it (secrets already redacted from ``url``/``error``)."""

    __tablename__ = "alert_attempts"
    __table_args__ = (Index("ix_alert_attempts_notification", "notification_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(BigInteger)
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    receiver: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text)
    final: Mapped[bool] = mapped_column(Boolean)


class SilenceRow(Base):
    """Alerts matching every matcher send nothing between ``starts_at`` and ``ends_at``; who and why are kept."""

    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    #: field -> value, fields of :data:`control_plane.alerts.silences.MATCH_FIELDS`.
    matchers: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    removed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """An ORM session whose transaction holds the database's write lock from its start; committed on exit.

    Why not a session over :func:`control_plane.audit.writing`'s connection: a session joined to a
    connection it does not own can roll back what it wrote on PostgreSQL. This session owns its
    connection; on SQLite it begins IMMEDIATE (a read-then-write transaction could not upgrade its lock
    under a concurrent writer), and objects stay readable after the commit (they are handed to delivery).
    """
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
