"""The alert engine on a real fleet database, real delivery (apprise) and a real HTTP receiver.

The fleet tables are fed through the centre's own ingest and telemetry code with an injected
clock (flap waits, escalation and expiry are minutes long); what is checked is what the
receiver got, and the alert rows, attempts and audit rows the engine left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.alerts import actions, lease
from control_plane.alerts.ack import ACK_KEY_FILE, sign
from control_plane.alerts.engine import Emitter
from control_plane.api import create_app
from control_plane.commands import Commands
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.directory import FleetDirectory
from control_plane.ingest import Batch, Event, Ingest
from control_plane.people import People
from control_plane.signer import SignerClient
from control_plane.tables import AlertRow, AttemptRow, AuditRow, NotificationRow
from tests.control_plane.alerts.fleetfeed import KEY, Harness, harness, serving


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """A migrated fleet database of each kind the centre runs on (row locks and write locks differ)."""
    url = sqlite_url(tmp_path / "fleet.db") if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    opened = open_engine(url)
    migrate(opened)
    try:
        yield opened
    finally:
        opened.dispose()


def _alerts(engine: Engine) -> list[AlertRow]:
    with Session(engine) as session:
        return list(session.scalars(select(AlertRow).order_by(AlertRow.id)))


def _advance(h: Harness, seconds: float, *, sites: tuple[str, ...] = ("s1",),
             hosts: tuple[tuple[str, str], ...] = ()) -> None:
    """Let ``seconds`` pass in steps, the sites pushing and ``hosts`` reporting as they would."""
    end = h.clock.now + seconds
    while h.clock.now < end:
        h.clock.now = min(end, h.clock.now + 4.0)
        for site in sites:
            h.feed.heartbeat(site)
        for site, host in hosts:
            h.feed.report(site, host)


def _failed_run(h: Harness, attempts: int = 1) -> None:
    h.feed.worker("s1", "w1", "h1")
    h.feed.run("s1", "r1", "failed", "stage probe:1: boom")
    h.feed.stage("s1", "r1", "probe:1", "failed", attempts, "boom: exit 1", worker="w1")


def test_a_failed_stage_is_sent_once_after_its_flap_wait_and_its_resolve_follows(engine: Engine) -> None:
    with harness(engine) as h:
        _failed_run(h)
        h.tick()
        assert h.got("oncall") == [], "a warning waits its flap wait"
        _advance(h, 31)
        h.tick()
        [firing] = h.got("oncall")
        [alert] = _alerts(engine)
        assert (alert.alert_type, alert.severity, alert.status) == ("job_failed", "warning", "firing")
        assert (alert.site_id, alert.tenant_id, alert.run_id, alert.stage, alert.host) == ("s1", "t1", "r1",
                                                                                          "probe:1", "h1")
        assert firing["event"] == "firing" and firing["alert_id"] == alert.id and firing["severity"] == "warning"
        assert firing["click_url"] == "https://centre.example/runs/s1/r1"
        assert firing["ack_url"].startswith("https://centre.example/ack/")
        for fact in ("job_failed", "probe:1", "r1", "tenant t1", "boom: exit 1", "https://centre.example/runs/s1/r1",
                     firing["ack_url"]):
            assert fact in firing["title"] + firing["message"], fact

        # Repeats: 100 ticks each seeing a new replicated event of the same stage, then 10,000 events at once.
        for attempt in range(2, 102):
            h.feed.stage("s1", "r1", "probe:1", "failed", attempt, "boom: exit 1", worker="w1")
            h.emitter.tick()
        for start in (0, 5000):
            seq = h.feed.seqs["s1"]
            events = [Event(seq + i + 1, "stage", ("r1", "probe:1"), "upsert",
                            {"run_id": "r1", "stage_id": "probe:1", "tenant_id": "t1", "kind": "probe",
                             "queue": "cpu_queue", "identity": "cd" * 32, "status": "failed", "depends_on": [],
                             "args": {}, "output": None, "outputs": {}, "attempts": 102 + start + i,
                             "worker": "w1", "message_id": None, "error": "boom: exit 1", "seconds": 0.1}, "t1",
                            h.clock()) for i in range(5000)]
            Ingest(engine, h.clock).apply(Batch("s1", events, seq + 5000))
            h.feed.seqs["s1"] = seq + 5000
        h.tick()
        assert len(h.got("oncall")) == 1, "repeats send nothing"
        alert, retries = _alerts(engine)
        assert alert.count == 102 and alert.status == "firing"
        # Over 3 attempts is excessive_retries too: a warning not yet past its flap wait, so not sent.
        assert (retries.alert_type, retries.status, retries.run_id) == ("excessive_retries", "pending", "r1")

        # Retried and done: the resolve goes out at once.
        h.feed.stage("s1", "r1", "probe:1", "done", 10102, worker="w1")
        h.feed.run("s1", "r1", "completed")
        h.tick()
        firing, resolved = h.got("oncall")
        assert resolved["event"] == "resolved" and resolved["alert_id"] == alert.id and resolved["ack_url"] is None
        assert "RESOLVED" in resolved["title"]
        alert, retries = _alerts(engine)
        assert alert.status == "resolved" and alert.resolved_at == h.clock.now
        assert retries.status == "resolved" and retries.notified_at is None, "resolved before its flap wait: unsent"
        with Session(engine) as session:
            attempts = session.scalars(select(AttemptRow).order_by(AttemptRow.id)).all()
            assert [(a.receiver, a.outcome, a.final) for a in attempts] == [("oncall", "sent", True)] * 2
            assert {n.status for n in session.scalars(select(NotificationRow))} == {"sent"}
        h.tick()
        assert len(h.got("oncall")) == 2, "a resolve is sent once"


def test_a_warning_that_clears_within_its_flap_wait_is_never_sent(engine: Engine) -> None:
    with harness(engine) as h:
        _failed_run(h)
        h.tick()
        _advance(h, 10)
        h.feed.stage("s1", "r1", "probe:1", "queued", 1, worker="w1")  # an operator retried it at once
        h.tick()
        _advance(h, 60)
        h.tick()
        assert h.rx.requests() == []
        [alert] = _alerts(engine)
        assert alert.status == "resolved" and alert.notified_at is None
        # The same key again within the dedup window: the same alert, reopened, its count going on.
        h.feed.stage("s1", "r1", "probe:1", "failed", 2, "boom", worker="w1")
        h.tick()
        [again] = _alerts(engine)
        assert again.id == alert.id and again.count == 2 and again.status == "pending"


def _host_down(h: Harness) -> None:
    """h1 stops reporting while h2 goes on: h1 alone is offline (3 intervals of 5 s missed)."""
    h.feed.report("s1", "h1")
    h.feed.report("s1", "h2")
    _advance(h, 20, hosts=(("s1", "h2"),))


@contextmanager
def _app(engine: Engine, tmp: Any) -> Iterator[httpx.Client]:
    """The centre's real web app over the same database, holding the emitter's ack key."""
    (tmp / ACK_KEY_FILE).write_text(KEY.hex())
    people = People(engine)
    commands = Commands(engine, FleetDirectory(engine), SignerClient(tmp / "no-signer.sock"))
    with serving(create_app(engine, people, commands, ack_key_file=tmp / ACK_KEY_FILE)) as client:
        yield client


def test_critical_goes_at_once_escalates_and_the_ack_link_stops_it(any_db: Engine, tmp_path: Any) -> None:
    engine = any_db
    with harness(engine) as h, _app(engine, tmp_path) as client:
        _host_down(h)
        h.tick()
        [firing] = h.got("oncall")
        assert firing["severity"] == "critical" and firing["click_url"] == "https://centre.example/hosts/s1/h1"
        assert h.got("lead") == []
        _advance(h, 601, hosts=(("s1", "h2"),))
        h.tick()
        [escalated] = h.got("lead")
        assert escalated["event"] == "escalation" and "ESCALATED" in escalated["title"]
        [alert] = _alerts(engine)
        assert alert.escalation_step == 1

        path = escalated["ack_url"].removeprefix("https://centre.example")
        page = client.get(path)
        assert page.status_code == 200 and "<form method=\"post\"" in page.text and "host_down" in page.text
        assert _alerts(engine)[0].status == "firing", "opening the page acks nothing"
        acked = client.post(path)
        assert acked.status_code == 200 and "acked" in acked.text
        [alert] = _alerts(engine)
        assert alert.status == "acked" and alert.acked_by == "lead (ack link)" and alert.acked_at is not None
        assert client.post(path).status_code == 200, "a second tap is not an error"
        with Session(engine) as session:
            audit = session.scalars(select(AuditRow).where(AuditRow.kind == "alert")).all()
            assert [(a.actor, a.subject) for a in audit] == [("lead (ack link)", f"alert {alert.id}")]

        # Acked: the repeat the route allows (repeat: 1) never comes.
        _advance(h, 1300, hosts=(("s1", "h2"),))
        h.tick()
        assert len(h.got("lead")) == 1 and len(h.got("oncall")) == 1
        # The host is back: everyone who was told it fired is told it resolved.
        h.feed.report("s1", "h1")
        h.tick()
        assert [m["event"] for m in h.got("oncall")] == ["firing", "resolved"]
        assert [m["event"] for m in h.got("lead")] == ["escalation", "resolved"]


def test_unacked_escalation_repeats_at_most_as_often_as_configured(engine: Engine) -> None:
    with harness(engine) as h:
        _host_down(h)
        h.tick()
        for _ in range(5):
            _advance(h, 601, hosts=(("s1", "h2"),))
            h.tick()
        assert [m["event"] for m in h.got("lead")] == ["escalation", "escalation"], "one level, repeated once"


def test_a_tampered_expired_or_foreign_ack_url_is_refused(engine: Engine, tmp_path: Any) -> None:
    with harness(engine) as h, _app(engine, tmp_path) as client:
        _host_down(h)
        h.tick()
        [firing] = h.got("oncall")
        path = firing["ack_url"].removeprefix("https://centre.example")
        payload, mac = path.removeprefix("/ack/").split(".")
        flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
        [alert] = _alerts(engine)
        refused = {
            "tampered payload": f"/ack/{flipped}.{mac}",
            "tampered signature": f"/ack/{payload}.{mac[:-2]}AA",
            "expired": f"/ack/{sign(KEY, alert.id, 'oncall', time.time() - 1)}",
            "another key": f"/ack/{sign(b'x' * 32, alert.id, 'oncall', time.time() + 600)}",
            "garbage": "/ack/garbage",
        }
        for case, bad in refused.items():
            answer = client.post(bad)
            assert answer.status_code == 403, (case, answer.text)
            assert "ack URL" in answer.json()["error"], case
        assert "expired" in client.post(refused["expired"]).json()["error"]
        assert _alerts(engine)[0].status == "firing"
        assert client.post(path).status_code == 200


def test_a_silence_and_a_maintenance_window_hold_and_lifting_them_sends(engine: Engine) -> None:
    with harness(engine, extra="""
maintenance:
  - site: s2
    start: 2027-01-15T00:00:00Z
    end: 2027-01-15T12:00:00Z
    reason: rack move
""") as h:
        silence = actions.silence(engine, ["type=host_down", "site=s1"], actor="ana", reason="reimaging h1",
                                  duration_s=3600, clock=h.clock)
        _host_down(h)
        h.tick()
        [alert] = _alerts(engine)
        assert alert.status == "silenced" and "reimaging h1" in alert.muted and h.rx.requests() == []
        actions.unsilence(engine, silence["id"], actor="ana", clock=h.clock)
        h.tick()
        assert [m["event"] for m in h.got("oncall")] == ["firing"]

        # Site s2 is in maintenance (the clock is 2027-01-15 03:20 UTC): its host going down sends nothing.
        assert h.clock.now == 1_800_000_000.0 + 20
        h.feed.report("s2", "h3")
        h.feed.report("s2", "h4")
        _advance(h, 20, sites=("s1", "s2"), hosts=(("s1", "h2"), ("s2", "h4")))
        h.tick()
        s2 = [a for a in _alerts(engine) if a.site_id == "s2"]
        assert [(a.alert_type, a.status) for a in s2] == [("host_down", "silenced")]
        assert "rack move" in s2[0].muted and len(h.got("oncall")) == 1
        with Session(engine) as session:
            kinds = session.scalars(select(AuditRow.subject).where(AuditRow.kind == "alert")).all()
            assert kinds == [f"silence {silence['id']}"] * 2


def test_a_down_host_mutes_its_failed_jobs_and_full_disks(engine: Engine) -> None:
    with harness(engine, extra="flap_wait: 0") as h:
        h.feed.report("s1", "h1", used=0.95)
        h.feed.report("s1", "h2")
        _failed_run(h)  # its worker w1 runs on h1
        _advance(h, 20, hosts=(("s1", "h2"),))
        h.tick()
        by_type = {a.alert_type: a for a in _alerts(engine)}
        assert by_type["host_down"].status == "firing"
        assert by_type["job_failed"].status == "silenced" and "inhibited by alert" in by_type["job_failed"].muted
        assert by_type["disk_full"].status == "silenced"
        assert [m["title"] for m in h.got("oncall")] == ["[CRITICAL] host_down at s1 (h1)"]


def test_when_the_centre_loses_every_site_at_once_nothing_storms(engine: Engine) -> None:
    with harness(engine, site_timeout=15) as h:
        for site in ("s1", "s2", "s3"):
            h.feed.heartbeat(site)
            for host in ("a", "b"):
                h.feed.report(site, f"{site}-{host}")
        h.tick()
        h.clock.now += 120  # nothing heard from anyone: the centre's own link is what broke
        h.tick()
        assert h.rx.requests() == [] and _alerts(engine) == []
        # One site really goes away while the others keep talking: that one is alerted.
        for site in ("s1", "s2"):
            h.feed.heartbeat(site)
            for host in ("a", "b"):
                h.feed.report(site, f"{site}-{host}")
        h.tick()
        assert [(a.alert_type, a.site_id) for a in _alerts(engine)] == [("site_disconnected", "s3")]
        assert [m["title"] for m in h.got("oncall")] == ["[CRITICAL] site_disconnected at s3"]


def test_a_restarted_emitter_neither_loses_a_resolve_nor_sends_twice(any_db: Engine) -> None:
    engine = any_db
    with harness(engine) as h:
        _host_down(h)
        h.tick()
        assert [m["event"] for m in h.got("oncall")] == ["firing"]
        # The emitter dies right after committing the resolve, before delivery had it: a new emitter that
        # has not attached delivery yet does exactly that much.
        h.deliverer.close()
        h.emitter.release()
        dying = Emitter(engine, h.config, KEY, h.clock)
        h.feed.report("s1", "h1")
        dying.tick()
        assert dying.leading
        with Session(engine) as session:
            pending = session.scalars(select(NotificationRow).where(NotificationRow.status == "pending")).all()
            assert [n.event for n in pending] == ["resolved"]
        h.restart()  # the dying one was killed: its lease holds until it lapses, and the new one waits
        h.tick()
        assert not h.emitter.leading and [m["event"] for m in h.got("oncall")] == ["firing"]
        h.clock.now += h.config.lease + 0.5
        h.tick()
        assert h.emitter.leading
        assert [m["event"] for m in h.got("oncall")] == ["firing", "resolved"], "resolve kept, firing not resent"
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(NotificationRow)
                                  .where(NotificationRow.status != "sent")) == 0


def test_the_api_lists_alerts_by_tenant_and_needs_an_operator_to_ack(engine: Engine, tmp_path: Any) -> None:
    with harness(engine, extra="flap_wait: 0") as h, _app(engine, tmp_path) as client:
        _failed_run(h)
        h.feed.worker("s1", "w1", "h2")  # not the host that goes down (that would mute the job's alert)
        h.feed.run("s1", "r2", "blocked", "gate canon: rule age: Mary is 40 in scene 1 and 12 in scene 2",
                   tenant="t2")
        h.feed.stage("s1", "r2", "canon_gate", "failed", 1, "blocked", tenant="t2")
        _host_down(h)
        h.tick()
        people = People(engine)
        tokens = {}
        for name, role, tenants in (("v1", "viewer", ["t1"]), ("op1", "operator", ["t1"]), ("op", "operator", None)):
            people.add_user(name, role, tenants)
            tokens[name] = {"Authorization": f"Bearer {people.create_token(name).token}"}
        seen = {a["alert_type"]: a for a in client.get("/api/v1/alerts", headers=tokens["v1"]).json()["alerts"]}
        assert set(seen) == {"job_failed", "host_down"}, "t2's blocked run is not t1's to see"
        everything = client.get("/api/v1/alerts", headers=tokens["op"]).json()["alerts"]
        blocked = next(a for a in everything if a["alert_type"] == "canon_blocked")
        assert blocked["stage"] == "canon_gate" and "rule age" in blocked["summary"]
        job = seen["job_failed"]["id"]
        assert client.post(f"/api/v1/alerts/{job}/ack", headers=tokens["v1"]).status_code == 403
        host = seen["host_down"]["id"]
        assert client.post(f"/api/v1/alerts/{host}/ack", headers=tokens["op1"]).status_code == 403, \
            "a fleet alert needs an operator of every tenant"
        answer = client.post(f"/api/v1/alerts/{job}/ack", headers=tokens["op1"])
        assert answer.status_code == 200 and answer.json()["acked_by"] == "op1"
        detail = client.get(f"/api/v1/alerts/{job}", headers=tokens["v1"]).json()
        assert detail["status"] == "acked" and detail["notifications"][0]["attempts"][0]["outcome"] == "sent"
        made = client.post("/api/v1/silences", headers=tokens["op1"],
                           json={"matchers": {"type": "disk_full"}, "reason": "x", "duration_s": 60})
        assert made.status_code == 403, "a tenant's operator silences only its own tenant's alerts"
        made = client.post("/api/v1/silences", headers=tokens["op1"],
                           json={"matchers": {"tenant": "t1"}, "reason": "release day", "duration_s": 60})
        assert made.status_code == 201
        assert client.delete(f"/api/v1/silences/{made.json()['id']}", headers=tokens["op1"]).status_code == 200


def test_lag_providers_and_budgets_fire_from_the_replicated_rows_that_carry_them(engine: Engine) -> None:
    """Sites write no provider or price yet (docs/alerts.md); these rules read the rows that will carry them."""
    with harness(engine, extra="flap_wait: 0\nbudgets: {t1: 1.0}") as h:
        for attempt in (1, 2, 3):  # three failed calls to one provider, 0.40 USD each
            h.feed.push("s1", "cost", ["r1", "voice:1", str(attempt)], {
                "run_id": "r1", "stage_id": "voice:1", "attempt": attempt, "kind": "voice", "worker": "w1",
                "origin": "external", "provider": "acme-tts", "compute_seconds": 1.0, "usd": 0.4, "outcome": "failed"})
        h.tick()
        by_type = {a.alert_type: a for a in _alerts(engine)}
        assert set(by_type) == {"provider_unavailable", "budget_exceeded"}
        assert by_type["provider_unavailable"].stage == "acme-tts" and by_type["budget_exceeded"].tenant_id == "t1"
        assert "1.20 USD" in by_type["budget_exceeded"].summary

        # The provider answers again: its alert resolves; the spend stays over budget.
        h.feed.push("s1", "cost", ["r1", "voice:1", "4"], {
            "run_id": "r1", "stage_id": "voice:1", "attempt": 4, "kind": "voice", "worker": "w1",
            "origin": "external", "provider": "acme-tts", "compute_seconds": 1.0, "usd": 0.0, "outcome": "done"})
        # A site whose newest applied event was committed 10 minutes before it arrived is lagging.
        seq = h.feed.seqs["s1"] + 1
        h.feed.seqs["s1"] = seq
        Ingest(engine, h.clock).apply(Batch("s1", [Event(seq, "queue", ("cpu_queue",), "upsert",
                                                         {"name": "cpu_queue", "paused": False, "completed": 1}, "-",
                                                         h.clock() - 600)], seq))
        h.tick()
        status = {a.alert_type: a.status for a in _alerts(engine)}
        assert status == {"provider_unavailable": "resolved", "budget_exceeded": "firing",
                          "replication_lagging": "firing"}
        events = [(m["title"], m["event"]) for m in h.got("oncall")]
        assert ("[RESOLVED] provider_unavailable at s1", "resolved") in events
        assert ("[WARNING] replication_lagging at s1", "firing") in events


def test_a_reopened_alert_resolved_before_it_was_sent_again_sends_no_second_resolve(engine: Engine) -> None:
    with harness(engine) as h:
        _failed_run(h)
        h.tick()
        _advance(h, 31)
        h.tick()  # sent (past its flap wait)
        h.feed.stage("s1", "r1", "probe:1", "queued", 1, worker="w1")
        h.tick()  # resolved: sent
        h.feed.stage("s1", "r1", "probe:1", "failed", 2, "boom again", worker="w1")
        h.tick()  # the same key within the dedup window: reopened, waiting its flap wait
        h.feed.stage("s1", "r1", "probe:1", "queued", 2, worker="w1")
        h.tick()  # cleared before it was announced again
        assert [m["event"] for m in h.got("oncall")] == ["firing", "resolved"]
        [alert] = _alerts(engine)
        assert alert.count == 2 and alert.status == "resolved"


def test_a_disconnected_site_mutes_its_hosts_down_and_sends_once(engine: Engine) -> None:
    """h1 dies first (paged); then its site stops replicating and h2 stops reporting: one site_disconnected
    page, and h1's host_down is muted by it with the reason, never "resolved" by the centre's loss of sight."""
    with harness(engine, site_timeout=30) as h:
        for site, host in (("s1", "h1"), ("s1", "h2"), ("s2", "h3")):
            h.feed.heartbeat(site)
            h.feed.report(site, host)
        _advance(h, 20, sites=("s1", "s2"), hosts=(("s1", "h2"), ("s2", "h3")))
        h.tick()
        [down] = _alerts(engine)
        assert (down.alert_type, down.host, down.status) == ("host_down", "h1", "firing")
        # s1 goes dark: no push, no host report; s2 (the other half of the fleet) goes on, so the centre
        # trusts its own view (one site of two lost is not the observer guard's "most").
        _advance(h, 40, sites=("s2",), hosts=(("s2", "h3"),))
        h.tick()
        h.tick()
        by_type = {a.alert_type: a for a in _alerts(engine)}
        site_down = by_type["site_disconnected"]
        assert (site_down.site_id, site_down.status) == ("s1", "firing")
        down = by_type["host_down"]
        assert down.status == "silenced" and down.resolved_at is None
        assert down.muted.startswith(f"inhibited by alert {site_down.id} (site_disconnected: site s1 disconnected")
        assert sorted(by_type) == ["host_down", "site_disconnected"], "h2 is not judged down: it is unknown"
        assert [m["title"] for m in h.got("oncall")] == ["[CRITICAL] host_down at s1 (h1)",
                                                         "[CRITICAL] site_disconnected at s1"]
        # The site comes back with h2 but not h1: the site resolves, h1's alert fires again unmuted, unsent twice.
        _advance(h, 8, sites=("s1", "s2"), hosts=(("s1", "h2"), ("s2", "h3")))
        h.tick()
        by_type = {a.alert_type: a for a in _alerts(engine)}
        assert by_type["site_disconnected"].status == "resolved" and by_type["host_down"].status == "firing"
        assert [(m["event"], m["alert_id"]) for m in h.got("oncall")] == [
            ("firing", down.id), ("firing", site_down.id), ("resolved", site_down.id)]


def test_two_emitters_on_one_database_one_sends_and_the_standby_takes_over(any_db: Engine) -> None:
    engine = any_db
    with harness(engine) as h:
        standby = Emitter(engine, h.config, KEY, h.clock)
        standby.attach(h.deliverer)
        h.feed.report("s1", "h1")
        h.feed.report("s1", "h2")
        h.tick()
        assert standby.tick().standby_for.startswith(f"{h.emitter.holder.host} pid ")
        assert h.emitter.leading and standby.leading is False
        _advance(h, 20, hosts=(("s1", "h2"),))
        for _ in range(3):
            h.tick()
            standby.tick()
        assert h.deliverer.wait_idle(20)
        assert [m["event"] for m in h.got("oncall")] == ["firing"]
        with Session(engine) as session:
            roles = [(e["role"], e["holder"]) for e in lease.emitters(session, h.clock.now)]
        assert roles == [("active", h.emitter.holder.id), ("standby", standby.holder.id)]
        # The holder dies (no release): nothing happens until its lease lapses, then the standby resolves.
        h.feed.report("s1", "h1")
        standby.tick()
        assert not standby.leading
        h.clock.now += h.config.lease + 0.5
        h.feed.report("s1", "h1")
        h.feed.report("s1", "h2")
        assert standby.tick().resolved == 1 and standby.leading
        assert h.deliverer.wait_idle(20)
        assert [m["event"] for m in h.got("oncall")] == ["firing", "resolved"]
        # The old holder, back from a stall, finds the lease taken: it stands by and sends nothing.
        assert h.emitter.tick().standby_for and not h.emitter.leading


def test_concurrent_ticks_of_two_emitters_never_both_hold_the_lease(any_db: Engine) -> None:
    engine = any_db
    with harness(engine) as h:
        emitters = [h.emitter, Emitter(engine, h.config, KEY, h.clock)]
        h.feed.report("s1", "h1")
        h.feed.report("s1", "h2")
        _advance(h, 20, hosts=(("s1", "h2"),))
        leaders: list[list[bool]] = [[], []]

        def ticking(index: int) -> None:
            for _ in range(15):
                emitters[index].tick()
                leaders[index].append(bool(emitters[index].leading))

        threads = [threading.Thread(target=ticking, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(any(flags) for flags in leaders) == 1, leaders
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(NotificationRow)) == 1
