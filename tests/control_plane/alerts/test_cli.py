"""``cinefleet alerts list|ack|silence|unsilence|silences|test`` as an operator runs them, on a real database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.alerts.testing import RecordingReceiver
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.tables import AuditRow
from tests.control_plane.alerts.fleetfeed import harness


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", "alerts", *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False)


def test_list_ack_silence_and_unsilence_from_the_command_line(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    migrate(engine)
    try:
        with harness(engine) as h:
            h.feed.report("s1", "h1")
            h.feed.report("s1", "h2")
            h.clock.now += 20
            h.feed.report("s1", "h2")
            h.tick()
        where = ("--control-dir", tmp_path)
        listed = _cli("list", *where, "--json")
        assert listed.returncode == 0, listed.stderr
        [alert] = json.loads(listed.stdout)
        assert (alert["alert_type"], alert["status"], alert["host"]) == ("host_down", "firing", "h1")
        assert "host_down" in _cli("list", *where).stdout

        acked = _cli("ack", str(alert["id"]), *where, "--by", "ana")
        assert acked.returncode == 0 and "acked by ana" in acked.stdout, acked.stderr
        assert json.loads(_cli("list", *where, "--json", "--status", "acked").stdout)[0]["acked_by"] == "ana"
        missing = _cli("ack", "999", *where, "--by", "ana")
        assert missing.returncode == 2 and "alert 999: no such alert" in missing.stderr
        bad_status = _cli("list", *where, "--status", "burning")
        assert bad_status.returncode == 2 and "status: value 'burning'" in bad_status.stderr

        made = _cli("silence", *where, "--match", "type=disk_full", "--match", "site=s1", "--for", "2h",
                    "--reason", "disk swap", "--by", "ana")
        assert made.returncode == 0, made.stderr
        silence_id = int(made.stdout)
        [active] = json.loads(_cli("silences", *where).stdout)
        assert active["matchers"] == {"type": "disk_full", "site": "s1"} and active["reason"] == "disk swap"
        assert active["ends_at"] - active["starts_at"] == 7200
        refused = _cli("silence", *where, "--match", "colour=red", "--reason", "x", "--by", "ana")
        assert refused.returncode == 2 and "matcher: field 'colour'" in refused.stderr
        refused = _cli("silence", *where, "--match", "type=disk_full", "--reason", " ", "--by", "ana")
        assert refused.returncode == 2 and "reason: empty" in refused.stderr
        assert _cli("unsilence", str(silence_id), *where, "--by", "bo").returncode == 0
        again = _cli("unsilence", str(silence_id), *where, "--by", "bo")
        assert again.returncode == 4 and "already removed by bo" in again.stderr
        assert json.loads(_cli("silences", *where).stdout) == []
        with Session(engine) as session:
            audit = [(a.actor, a.subject, json.loads(a.detail)["action"]) for a in session.scalars(
                select(AuditRow).where(AuditRow.kind == "alert").order_by(AuditRow.seq))]
        assert audit == [("ana", f"alert {alert['id']}", "ack"), ("ana", f"silence {silence_id}", "silence"),
                         ("bo", f"silence {silence_id}", "unsilence")]
    finally:
        engine.dispose()


def test_alerts_test_sends_to_a_receiver_and_says_how_it_went(tmp_path: Path) -> None:
    with RecordingReceiver() as rx:
        config = tmp_path / "alerts.yaml"
        config.write_text(f"""
receivers:
  - name: phone
    urls: ["{rx.ntfy_url('oncall')}"]
  - name: broken
    urls: ["{rx.json_url('broken')}"]
""")
        where = ("--control-dir", tmp_path, "--config", config)
        sent = _cli("test", "phone", *where)
        assert sent.returncode == 0, sent.stderr
        assert "test message to phone: sent" in sent.stdout
        [got] = rx.requests("/oncall")
        assert got.json()["title"] == "cinefleet test alert" and "test message" in got.json()["message"]

        rx.fail("/broken", 1, status=400)  # refused outright: given up at once
        failed = _cli("test", "broken", *where)
        assert failed.returncode == 1 and "test message to broken: failed" in failed.stderr, failed.stderr
        assert "attempt 1:" in failed.stdout

        unknown = _cli("test", "pager", *where)
        assert unknown.returncode == 2 and "receiver 'pager': not in the configuration" in unknown.stderr
