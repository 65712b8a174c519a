"""The alerts pages: thin views over :mod:`control_plane.alerts.actions`, the same core the API and the
``cinefleet alerts`` commands use, so a page shows exactly what ``/api/v1/alerts`` lists.

Every query here is bounded and rides an index: the list is ``list_alerts`` (``status`` /
``last_seen`` indexes, at most :data:`ALERT_ROWS` rows), one alert's notifications are found by
``alert_id`` and their attempts by ``notification_id`` (both indexed; the attempts' own ``alert_id``
column is not), and the fleet page's firing count is one ``COUNT`` over the ``status`` index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.alerts import actions
from control_plane.alerts.silences import MATCH_FIELDS
from control_plane.errors import ControlInputError, NotFound
from control_plane.tables import AlertRow, AttemptRow, NotificationRow

if TYPE_CHECKING:  # the pages table imports this module for its rows' views
    from control_plane.dashboard.pages import View

#: Alerts one page lists (newest activity first); older ones are found by filtering.
ALERT_ROWS = 100
#: Notifications (and attempts per notification) one alert's page shows at most.
DELIVERY_ROWS = 200
#: What the page lists unless a status is chosen: everything someone may still have to look at.
OPEN = ("firing", "acked", "silenced")
#: Silence lengths the form offers, in hours (the core caps a silence at 30 days).
SILENCE_HOURS = (1, 4, 12, 24, 72, 168)


def firing_count(session: Session, scope: list[str] | None) -> int:
    """Firing alerts the caller may see: the fleet page's tile (one COUNT over the status index)."""
    query = select(func.count()).select_from(AlertRow).where(AlertRow.status == "firing")
    if scope is not None:
        query = query.where(AlertRow.tenant_id.is_(None) | AlertRow.tenant_id.in_(scope))
    return int(session.scalar(query) or 0)


def alerts_page(v: View) -> dict[str, Any]:
    """Open alerts (or those of the chosen status), the silences in force, and the operator's forms."""
    status = v.choice("status", actions.STATUSES)
    alert_type, site = v.text("type", 32), v.text("site", 64)
    rows = actions.list_alerts(v.fleet.session, v.scope, status=(status,) if status else OPEN, site_id=site,
                               alert_type=alert_type, limit=ALERT_ROWS + 1)
    return {"alerts": rows[:ALERT_ROWS], "more": len(rows) > ALERT_ROWS, "status": status or "",
            "statuses": actions.STATUSES, "type": alert_type or "", "site": site or "",
            "silences": actions.list_silences(v.fleet.session, active_at=v.now),
            "match_fields": tuple(MATCH_FIELDS), "hours": SILENCE_HOURS, "links": {r["id"]: links(r) for r in rows}}


def alert_page(v: View) -> dict[str, Any]:
    """One alert: its fields, links to what it is about, and every notification with each attempt."""
    alert_id = whole_id(v.path["alert_id"], "alert id")
    row = actions.get_alert(v.fleet.session, alert_id)
    if row.tenant_id is not None and not v.principal.allows_tenant(row.tenant_id):
        raise NotFound(f"alert {alert_id}: no such alert")  # another tenant's: as if absent, as in the API
    alert = actions.alert_view(row)
    return {"alert": alert, "links": links(alert), "notifications": _deliveries(v.fleet.session, row.id)}


def whole_id(raw: str, name: str) -> int:
    """A path's id (an alert's, a silence's): a positive whole number, or bad input naming it."""
    if not raw.isdigit() or not 1 <= int(raw) <= 2**62:
        raise ControlInputError(f"{name}: value {raw[:40]!r}: expected a positive whole number")
    return int(raw)


def links(alert: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, path) for the site, host, run and stage the alert names, and its own deep link."""
    site, found = alert["site_id"], []
    if site and alert["host"]:
        found.append((f"host {alert['host']}", f"/hosts/{site}/{alert['host']}"))
    if site and alert["run_id"]:
        run = f"/runs/{site}/{alert['run_id']}"
        found.append((f"run {alert['run_id']}", run))
        if alert["stage"]:
            found.append((f"stage {alert['stage']}", f"{run}#stages"))
    if site:
        found.append((f"site {site}", f"/hosts?site={site}"))
    if alert["link"] and alert["link"] not in {path for _label, path in found}:
        found.append(("explain", alert["link"]))
    return found


def _deliveries(session: Session, alert_id: int) -> list[dict[str, Any]]:
    """The alert's notifications, each with its attempts; by the indexed columns, bounded."""
    notes = list(session.scalars(select(NotificationRow).where(NotificationRow.alert_id == alert_id)
                                 .order_by(NotificationRow.id).limit(DELIVERY_ROWS)))
    attempts: dict[int, list[AttemptRow]] = {}
    if notes:
        for a in session.scalars(select(AttemptRow).where(AttemptRow.notification_id.in_([n.id for n in notes]))
                                 .order_by(AttemptRow.id).limit(DELIVERY_ROWS * 4)):
            attempts.setdefault(a.notification_id, []).append(a)
    return [{"id": n.id, "receiver": n.receiver, "event": n.event, "status": n.status, "created_at": n.created_at,
             "finished_at": n.finished_at, "attempts": attempts.get(n.id, [])} for n in notes]
