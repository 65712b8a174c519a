"""What people do to alerts: list them, ack one, silence some, lift a silence. Each change is audited.

Shared by the API (``/api/v1/alerts``, the public ``/ack/{token}``) and the CLI (``cinefleet alerts
...``); they write the fleet database only, and ``alerts serve`` sees the change on its next tick.
An ack and its audit row commit together; so do a silence and its audit row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.alerts.session import write_session
from control_plane.alerts.silences import parse_matchers
from control_plane.audit import AuditLog
from control_plane.errors import Conflict, ControlInputError, NotFound
from control_plane.tables import AlertRow, AttemptRow, NotificationRow, SilenceRow

STATUSES = ("pending", "firing", "acked", "silenced", "resolved")
#: The longest silence: a forgotten one must not hide a fleet for ever.
MAX_SILENCE_S = 30 * 86400.0
MAX_LIST = 500
Scope = Sequence[str] | None


def alert_view(row: AlertRow, public_url: str | None = None) -> dict[str, Any]:
    link = (public_url.rstrip("/") + row.link) if public_url else row.link
    return {"id": row.id, "key": row.key, "alert_type": row.alert_type, "severity": row.severity,
            "status": row.status, "site_id": row.site_id, "tenant_id": row.tenant_id, "run_id": row.run_id,
            "stage": row.stage, "host": row.host, "summary": row.summary, "link": link,
            "first_seen": row.first_seen, "last_seen": row.last_seen, "count": row.count,
            "notified_at": row.notified_at, "escalation_step": row.escalation_step, "muted": row.muted,
            "acked_by": row.acked_by, "acked_at": row.acked_at, "resolved_at": row.resolved_at}


def silence_view(row: SilenceRow) -> dict[str, Any]:
    return {"id": row.id, "matchers": row.matchers, "starts_at": row.starts_at, "ends_at": row.ends_at,
            "created_by": row.created_by, "reason": row.reason, "created_at": row.created_at,
            "removed_by": row.removed_by, "removed_at": row.removed_at}


def list_alerts(session: Session, scope: Scope = None, *, status: Sequence[str] = (), site_id: str | None = None,
                alert_type: str | None = None, limit: int = 100, public_url: str | None = None
                ) -> list[dict[str, Any]]:
    """Newest first. A tenant-scoped caller sees its tenants' alerts and the fleet's (no tenant)."""
    for value in status:
        if value not in STATUSES:
            raise ControlInputError(f"status: value {value!r}: expected one of {', '.join(STATUSES)}")
    if not 1 <= limit <= MAX_LIST:
        raise ControlInputError(f"limit: value {limit}: expected 1 to {MAX_LIST}")
    query = select(AlertRow)
    if scope is not None:
        query = query.where(AlertRow.tenant_id.is_(None) | AlertRow.tenant_id.in_(list(scope)))
    if status:
        query = query.where(AlertRow.status.in_(list(status)))
    if site_id is not None:
        query = query.where(AlertRow.site_id == site_id)
    if alert_type is not None:
        query = query.where(AlertRow.alert_type == alert_type)
    rows = session.scalars(query.order_by(AlertRow.last_seen.desc(), AlertRow.id.desc()).limit(limit))
    return [alert_view(r, public_url) for r in rows]


def get_alert(session: Session, alert_id: int) -> AlertRow:
    row = session.get(AlertRow, alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id}: no such alert")
    return row


def _attempt_view(a: AttemptRow) -> dict[str, Any]:
    return {"receiver": a.receiver, "url": a.url, "attempt": a.attempt, "started_at": a.started_at,
            "finished_at": a.finished_at, "outcome": a.outcome, "error": a.error, "final": a.final}


def deliveries_of(session: Session, notification_id: int) -> list[dict[str, Any]]:
    """One notification's attempts, in order."""
    return [_attempt_view(a) for a in session.scalars(select(AttemptRow).where(
        AttemptRow.notification_id == notification_id).order_by(AttemptRow.id))]


def deliveries(session: Session, alert_id: int) -> list[dict[str, Any]]:
    """An alert's notifications and their attempts: who was told what, when, and how it went."""
    attempts: dict[int, list[dict[str, Any]]] = {}
    for a in session.scalars(select(AttemptRow).where(AttemptRow.alert_id == alert_id).order_by(AttemptRow.id)):
        attempts.setdefault(a.notification_id, []).append(_attempt_view(a))
    return [{"id": n.id, "receiver": n.receiver, "event": n.event, "status": n.status, "created_at": n.created_at,
             "finished_at": n.finished_at, "attempts": attempts.get(n.id, [])}
            for n in session.scalars(select(NotificationRow).where(NotificationRow.alert_id == alert_id)
                                     .order_by(NotificationRow.id))]


def ack(engine: Any, alert_id: int, actor: str, *, via: str, audit: AuditLog | None = None,
        tenant_check: Any = None, clock: Any = time.time) -> dict[str, Any]:
    """Mark the alert acked by ``actor``; nothing more is sent for it until it resolves.

    Acking an acked alert changes nothing (a second tap on the phone is not an error); a resolved
    one is a :class:`Conflict`. ``tenant_check(tenant_id)`` may refuse (the API's caller check).
    """
    with write_session(engine) as session:
        query = select(AlertRow).where(AlertRow.id == alert_id)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update()
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"alert {alert_id}: no such alert")
        if tenant_check is not None:
            tenant_check(row.tenant_id)
        if row.status == "acked":
            return alert_view(row)
        if row.status == "resolved":
            raise Conflict(f"alert {alert_id}: already resolved at {row.resolved_at}; nothing to ack")
        row.status, row.acked_by, row.acked_at = "acked", actor, float(clock())
        (audit or AuditLog()).append(session.connection(), actor, "alert", f"alert {alert_id}",
                                     {"action": "ack", "via": via, "alert_type": row.alert_type, "key": row.key})
        return alert_view(row)


def silence(engine: Any, matchers: Sequence[str] | Mapping[str, str], *, actor: str, reason: str,
            duration_s: float, starts_at: float | None = None, audit: AuditLog | None = None,
            clock: Any = time.time) -> dict[str, Any]:
    """A new silence from now (or ``starts_at``) for ``duration_s``; ``reason`` is required."""
    checked = parse_matchers(matchers)
    if not reason.strip():
        raise ControlInputError("reason: empty; expected why the alerts are silenced")
    if not 0 < duration_s <= MAX_SILENCE_S:
        raise ControlInputError(f"duration: value {duration_s:g} s: expected more than 0 and at most "
                                f"{MAX_SILENCE_S:g} s (30 days)")
    now = float(clock())
    start = now if starts_at is None else float(starts_at)
    with write_session(engine) as session:
        row = SilenceRow(matchers=checked, starts_at=start, ends_at=start + duration_s, created_by=actor,
                         reason=reason.strip(), created_at=now)
        session.add(row)
        session.flush()
        (audit or AuditLog()).append(session.connection(), actor, "alert", f"silence {row.id}",
                                     {"action": "silence", "matchers": checked, "starts_at": start,
                                      "ends_at": start + duration_s, "reason": row.reason})
        return silence_view(row)


def unsilence(engine: Any, silence_id: int, *, actor: str, audit: AuditLog | None = None,
              clock: Any = time.time) -> dict[str, Any]:
    with write_session(engine) as session:
        row = session.get(SilenceRow, silence_id)
        if row is None:
            raise NotFound(f"silence {silence_id}: no such silence")
        if row.removed_at is not None:
            raise Conflict(f"silence {silence_id}: already removed by {row.removed_by}")
        row.removed_by, row.removed_at = actor, float(clock())
        (audit or AuditLog()).append(session.connection(), actor, "alert", f"silence {silence_id}",
                                     {"action": "unsilence", "matchers": row.matchers})
        return silence_view(row)


def list_silences(session: Session, *, active_at: float | None = None) -> list[dict[str, Any]]:
    query = select(SilenceRow).order_by(SilenceRow.id.desc())
    if active_at is not None:
        query = query.where(SilenceRow.removed_at.is_(None), SilenceRow.ends_at > active_at)
    return [silence_view(r) for r in session.scalars(query.limit(MAX_LIST))]

