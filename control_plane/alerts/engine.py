"""The alert engine: each tick, conditions → alerts (dedup) → mute → send, escalate, resolve.

One tick is one write transaction over the fleet database: alert rows change and the
notifications they cause (the delivery outbox) are inserted together, so a crash leaves either
both or neither. Only after the commit are the new notifications handed to the Deliverer; every
attempt it reports is recorded and its final one marks the notification ``sent`` or ``failed``.
When an emitter takes the lease (:mod:`control_plane.alerts.lease`: on its first tick, or when the
holder it stood by for died) every notification still ``pending`` is handed over again: a restart
or a takeover loses no resolve and resends nothing already final. (A send whose final attempt was
not yet recorded when the process died is sent again: delivery is at least once.)

Lifecycle of an alert (``status``):

* ``pending``: seen, not sent. Critical goes out on the tick it appears; a warning or info alert
  waits ``flap_wait`` and, resolved before that, is never sent.
* ``firing``: sent to the receivers its route names; escalates while unacked.
* ``acked``: someone has it (who and when recorded); nothing more is sent until it resolves.
* ``silenced``: a silence, the site's maintenance window or an inhibiting alert mutes it; it
  becomes pending or firing again when that ends.
* ``resolved``: the condition cleared; a resolved message goes at once to every receiver that
  was told it fired. A repeat of the key within ``dedup_window`` of resolving reopens that alert
  (its count goes on) instead of opening a new one.

A repeat of an open alert's key bumps its count and sends nothing: 10,000 identical events are
one notification. Several ``alerts serve`` may share a database: the lease, taken and renewed in
each tick's transaction, lets one of them send while the others stand by, writing nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.alerts.ack import sign
from control_plane.alerts.conditions import Condition, Evaluation, evaluate
from control_plane.alerts.config import AlertConfig, Route
from control_plane.alerts.delivery import Attempt, Message, Receiver
from control_plane.alerts.lease import LEASE, Holder, claim, release
from control_plane.alerts.session import write_session
from control_plane.alerts.silences import active_silences, silence_matches
from control_plane.audit import writing
from control_plane.tables import AlertRow, AttemptRow, LeaseRow, NotificationRow, SilenceRow

log = logging.getLogger(__name__)

OPEN = ("pending", "firing", "acked", "silenced")
#: Notifications that told a receiver an alert fired: the resolve goes to each of their receivers.
TOLD = ("firing", "escalation")


class Submitter(Protocol):
    """What the engine needs of :class:`control_plane.alerts.delivery.Deliverer`."""

    def submit(self, receiver: str, message: Message) -> None: ...


def receivers_of(config: AlertConfig) -> dict[str, Receiver]:
    """The Deliverer's receivers, from the configuration."""
    return {r.name: Receiver(r.name, tuple(r.urls), r.fallback) for r in config.receivers}


@dataclass(frozen=True)
class TickReport:
    """What one tick did (for logs and tests)."""

    opened: int
    repeated: int
    resolved: int
    sent: int
    held_because: str = ""
    #: Who holds the lease while this emitter stands by (it then did nothing); "" while it sends.
    standby_for: str = ""
    #: Pending notifications handed over again because this tick took the lease.
    resumed: int = 0


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Emitter:
    """Turns the fleet's conditions into alert rows and notifications; knows no transport.

    Parameters:
        engine: the fleet database.
        config: validated configuration.
        ack_key: the HMAC key the ack URLs are signed with.
        clock: unix seconds now (tests inject one for the minute-scale timers).
        holder: who this emitter is for the lease; a new one (this host and pid, a fresh id) by default.
    """

    def __init__(self, engine: Engine, config: AlertConfig, ack_key: bytes,
                 clock: Callable[[], float] = time.time, holder: Holder | None = None) -> None:
        self.engine, self.config, self.ack_key, self.clock = engine, config, ack_key, clock
        self.holder = holder or Holder.here()
        #: Whether this emitter's last tick held the lease (None before its first tick).
        self.leading: bool | None = None
        self._submitter: Submitter | None = None
        self._resume = False
        self._record_lock = threading.Lock()

    # -- delivery ---------------------------------------------------------------------------------

    def attach(self, submitter: Submitter, *, resume: bool = True) -> None:
        """Hand notifications to ``submitter`` from now on; with ``resume``, also every one still pending
        each time this emitter takes the lease (not before: while another emitter holds it, they are its).

        ``alerts test`` attaches without resuming: the pending rows are the running emitter's to send,
        not a one-off command's.
        """
        self._submitter, self._resume = submitter, resume

    def release(self) -> None:
        """On a clean stop, after delivery let go: give the lease up so that a standby takes over at once."""
        release(self.engine, self.holder)
        self.leading = False

    def _submit(self, rows: Iterable[NotificationRow]) -> None:
        if self._submitter is None:
            return
        for row in rows:
            if row.receiver not in {r.name for r in self.config.receivers}:
                log.warning("notification %s: receiver %r is no longer configured; marked failed", row.id,
                            row.receiver)
                self._finish(row.id, "failed")
                continue
            self._submitter.submit(row.receiver, Message(
                notification_id=row.id, alert_id=row.alert_id or 0, event=row.event, severity=row.severity,
                title=row.title, body=row.body, click_url=row.click_url, ack_url=row.ack_url))

    def record(self, attempt: Attempt) -> None:
        """The Deliverer's ``record``: keep the attempt; its final one settles the notification."""
        with self._record_lock, writing(self.engine) as connection:
            connection.execute(AttemptRow.__table__.insert().values(
                notification_id=attempt.notification_id, alert_id=attempt.alert_id or None, receiver=attempt.receiver,
                url=attempt.url, attempt=attempt.attempt, started_at=attempt.started_at,
                finished_at=attempt.finished_at, outcome=attempt.outcome, error=attempt.error, final=attempt.final))
            if attempt.final:
                table = NotificationRow.__table__
                # A fallback's success settles a notification whose primary receiver gave up.
                if (attempt.receiver_outcome or attempt.outcome) == "sent":
                    connection.execute(update(table).where(table.c.id == attempt.notification_id)
                                       .values(status="sent", finished_at=attempt.finished_at))
                else:
                    connection.execute(update(table).where(table.c.id == attempt.notification_id,
                                                           table.c.status == "pending")
                                       .values(status="failed", finished_at=attempt.finished_at))

    def _finish(self, notification_id: int, status: str) -> None:
        with writing(self.engine) as connection:
            table = NotificationRow.__table__
            connection.execute(update(table).where(table.c.id == notification_id)
                               .values(status=status, finished_at=self.clock()))

    def send_test(self, receiver: str) -> int:
        """Queue a test message to ``receiver`` (``alerts test``); returns its notification id."""
        self.config.receiver(receiver)  # a clear error for an unknown name
        now = self.clock()
        with write_session(self.engine) as session:
            row = NotificationRow(alert_id=None, receiver=receiver, event="test", severity="info",
                                  title="cinefleet test alert",
                                  body=f"A test message from cinefleet's alert emitter at {_stamp(now)}. "
                                       f"Dashboards: {self.config.link('/')}",
                                  click_url=self.config.link("/"), ack_url=None, status="pending", created_at=now)
            session.add(row)
        self._submit([row])
        return row.id

    # -- the tick ---------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Take or renew the lease, evaluate, update the alerts and write their notifications in one
        transaction; then hand them over. Without the lease it evaluates nothing and writes only its
        standby row."""
        now = self.clock()
        with Session(self.engine) as reading:
            lease = reading.get(LeaseRow, LEASE)
            other = lease is not None and lease.holder != self.holder.id and lease.expires_at >= now
            holder = f"{lease.host} pid {lease.pid} ({lease.holder[:8]})" if lease is not None and other else ""
            evaluation = None if other else evaluate(reading, self.config, now)
        resumed: list[NotificationRow] = []
        with write_session(self.engine) as session:
            leading = claim(session, self.holder, now, self.config.lease)
            if leading and not self.leading and self._resume:
                # Taken (first tick, or the holder died): what it committed and did not settle is ours to send.
                resumed = list(session.scalars(select(NotificationRow).where(NotificationRow.status == "pending")
                                               .order_by(NotificationRow.id)))
            if leading and evaluation is not None:
                report, outbox = self._apply(session, evaluation, now)
            else:
                # Taken on a tick that found it held: evaluated from the next tick on.
                report = TickReport(0, 0, 0, 0, standby_for="" if leading else holder or "another emitter")
                outbox = []
        if leading != self.leading:
            if leading:
                log.info("emitter %s: holds the lease; sending", self.holder)
            else:
                log.warning("emitter %s: standby, the lease is held by %s; sending nothing until it lapses",
                            self.holder, holder or "another emitter")
        self.leading = leading
        self._submit(resumed + outbox)
        if resumed:
            report = dataclasses.replace(report, resumed=len(resumed))
        return report

    def _apply(self, session: Session, evaluation: Evaluation, now: float
               ) -> tuple[TickReport, list[NotificationRow]]:
        query = select(AlertRow).where(AlertRow.status.in_(OPEN))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # an ack committing meanwhile is not overwritten
        open_alerts = {a.key: a for a in session.scalars(query)}
        outbox: list[NotificationRow] = []
        opened = repeated = resolved = 0
        for condition in evaluation.conditions.values():
            alert = open_alerts.get(condition.key)
            if alert is None:
                alert = self._open(session, condition, now)
                open_alerts[condition.key] = alert
                opened += 1
            elif alert.occurrence != condition.occurrence:
                alert.count += 1
                alert.occurrence, alert.last_seen, alert.summary = condition.occurrence, now, condition.summary
                repeated += 1
        for alert in list(open_alerts.values()):
            if (alert.key in evaluation.conditions or alert.alert_type in evaluation.held
                    or alert.key in evaluation.unknown):
                continue
            outbox += self._resolve(session, alert, now)
            del open_alerts[alert.key]
            resolved += 1
        silences = active_silences(session, now)
        alerts = list(open_alerts.values())
        for alert in alerts:
            alert.muted = self._muted(alert, alerts, silences, now)
            if alert.status == "acked":
                continue
            if alert.muted:
                alert.status = "silenced"
                continue
            alert.status = "firing" if alert.notified_at is not None else "pending"
            if alert.status == "pending" and (alert.severity == "critical"
                                              or now - alert.opened_at >= self.config.flap_wait):
                outbox += self._fire(session, alert, now)
            elif alert.status == "firing":
                outbox += self._escalate(session, alert, now)
        session.flush()
        return TickReport(opened, repeated, resolved, len(outbox), evaluation.held_because), outbox

    def _open(self, session: Session, condition: Condition, now: float) -> AlertRow:
        """A new alert, or the same key's alert resolved within the dedup window, reopened."""
        recent = session.scalars(select(AlertRow).where(AlertRow.key == condition.key, AlertRow.status == "resolved",
                                                        AlertRow.resolved_at >= now - self.config.dedup_window)
                                 .order_by(AlertRow.resolved_at.desc()).limit(1)).first()
        if recent is not None:
            recent.status, recent.resolved_at, recent.opened_at = "pending", None, now
            recent.count += 1
            recent.occurrence, recent.last_seen, recent.summary = condition.occurrence, now, condition.summary
            recent.notified_at, recent.escalation_step, recent.acked_by, recent.acked_at = None, 0, None, None
            return recent
        alert = AlertRow(key=condition.key, alert_type=condition.alert_type, severity=condition.severity,
                         status="pending", site_id=condition.site_id, tenant_id=condition.tenant_id,
                         run_id=condition.run_id, stage=condition.stage, host=condition.host,
                         summary=condition.summary, link=condition.link, first_seen=now, last_seen=now, count=1,
                         occurrence=condition.occurrence, opened_at=now, notified_at=None, escalation_step=0,
                         muted="")
        session.add(alert)
        session.flush()  # its id goes into the ack URLs
        return alert

    def _muted(self, alert: AlertRow, alerts: Sequence[AlertRow], silences: Sequence[SilenceRow], now: float) -> str:
        """Why ``alert`` must send nothing now; "" when it may."""
        for silence in silences:
            if silence_matches(silence, alert):
                return f"silence {silence.id} by {silence.created_by}: {silence.reason}"
        for window in self.config.maintenance:
            if window.site == alert.site_id and window.start.timestamp() <= now < window.end.timestamp():
                return f"maintenance of site {window.site} until {window.end.isoformat()}" + (
                    f": {window.reason}" if window.reason else "")
        for rule in self.config.inhibit:
            if alert.alert_type not in rule.targets:
                continue
            for source in alerts:
                if source is alert or source.alert_type != rule.source:
                    continue
                if all(getattr(source, _FIELDS[f]) is not None
                       and getattr(source, _FIELDS[f]) == getattr(alert, _FIELDS[f]) for f in rule.equal):
                    return f"inhibited by alert {source.id} ({source.alert_type}: {source.summary[:120]})"
        return ""

    def routes(self, alert: AlertRow) -> list[Route]:
        """The routes ``alert`` takes: the first that matches, and the next ones while ``continue`` says so."""
        taken = []
        for route in self.config.routes:
            m = route.match
            if ((not m.type or alert.alert_type in m.type) and (not m.severity or alert.severity in m.severity)
                    and (not m.site or alert.site_id in m.site) and (not m.tenant or alert.tenant_id in m.tenant)):
                taken.append(route)
                if not route.continue_:
                    break
        return taken

    def _fire(self, session: Session, alert: AlertRow, now: float) -> list[NotificationRow]:
        receivers = list(dict.fromkeys(name for route in self.routes(alert) for name in route.receivers))
        alert.status, alert.notified_at, alert.escalation_step = "firing", now, 0
        if not receivers:
            log.warning("alert %s (%s): no route matches it; recorded, sent nowhere", alert.id, alert.key)
        return [self._notify(session, alert, name, "firing", now) for name in receivers]

    def _escalate(self, session: Session, alert: AlertRow, now: float) -> list[NotificationRow]:
        routes = [r for r in self.routes(alert) if r.escalation]
        if not routes or alert.notified_at is None:
            return []
        route = routes[0]
        levels, step = route.escalation, alert.escalation_step
        if step >= len(levels) + route.repeat:
            return []
        due = alert.notified_at + sum(levels[min(i, len(levels) - 1)].after for i in range(step + 1))
        if now < due:
            return []
        alert.escalation_step = step + 1
        level = levels[min(step, len(levels) - 1)]
        return [self._notify(session, alert, name, "escalation", now) for name in level.receivers]

    def _resolve(self, session: Session, alert: AlertRow, now: float) -> list[NotificationRow]:
        alert.status, alert.resolved_at, alert.last_seen = "resolved", now, now
        # Told in this episode (from its first send on): a reopened alert's earlier firing was already answered
        # by its earlier resolve, and an episode never sent owes no one a resolve.
        if alert.notified_at is None:
            return []
        told = session.scalars(select(NotificationRow.receiver).where(
            NotificationRow.alert_id == alert.id, NotificationRow.event.in_(TOLD),
            NotificationRow.created_at >= alert.notified_at)).all()
        return [self._notify(session, alert, name, "resolved", now) for name in dict.fromkeys(told)]

    def _notify(self, session: Session, alert: AlertRow, receiver: str, event: str, now: float) -> NotificationRow:
        """One outbox row: the message ``receiver`` gets for ``event`` of ``alert``."""
        click = self.config.link(alert.link)
        ack = None
        if event != "resolved":
            token = sign(self.ack_key, alert.id, receiver, now + self.config.ack_ttl)
            ack = self.config.link(f"/ack/{token}")
        where = ", ".join(f"{name} {value}" for name, value in (
            ("site", alert.site_id), ("tenant", alert.tenant_id), ("host", alert.host), ("run", alert.run_id),
            ("stage", alert.stage)) if value)
        label = {"firing": alert.severity.upper(), "escalation": f"ESCALATED {alert.severity.upper()}",
                 "resolved": "RESOLVED"}[event]
        title = f"[{label}] {alert.alert_type}" + (f" at {alert.site_id}" if alert.site_id else "") + (
            f" ({alert.host})" if alert.host else "")
        lines = [alert.summary, "", f"alert {alert.id}: {alert.alert_type}, {alert.severity}" + (
                     f"; {where}" if where else ""),
                 f"first seen {_stamp(alert.first_seen)}, last seen {_stamp(alert.last_seen)}, count {alert.count}"]
        if event == "resolved":
            lines.append(f"resolved {_stamp(now)}")
        lines.append(f"Details: {click}")
        if ack is not None:
            lines.append(f"Ack: {ack}")
        row = NotificationRow(alert_id=alert.id, receiver=receiver, event=event, severity=alert.severity, title=title,
                              body="\n".join(lines), click_url=click, ack_url=ack, status="pending", created_at=now)
        session.add(row)
        return row


#: Inhibition's ``equal`` names → alert columns.
_FIELDS = {"site": "site_id", "host": "host"}
