"""End to end on real processes: a site and its agents push to a real centre, ``alerts serve`` reads the
centre's database and sends through apprise to a recording receiver; acks go through the centre's web process.

Real site events: a project the canon gate blocks, a volume over its (deliberately low) high-water
mark, an agent killed with SIGKILL. Each arrives once with its fields and deep link; the ack link
works on the real centre; the emitter killed mid-alert and restarted neither loses the resolve
nor sends anything twice. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.alerts.testing import RecordingReceiver
from control_plane.tables import AlertRow, NotificationRow
from control_plane.testing import Centre
from ops_agent import keys
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from site_scheduler.testing import Site

ROOT = Path(__file__).resolve().parents[3]
LOOSE = ["--load-per-cpu", "1000", "--memory-high", "1.0"]
REPORT_S = 1.0


class Emitter:
    """``cinefleet alerts serve`` as a subprocess."""

    def __init__(self, control_dir: Path, config: Path, log: Path) -> None:
        self.command = [sys.executable, "-m", "cinefleet", "alerts", "serve", "--control-dir", str(control_dir),
                        "--config", str(config)]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log, start_new_session=True)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                assert self.process.wait(timeout=30) == 0, self.log.read_text()[-2000:]
            finally:
                if self.process.poll() is None:
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process = None


def _blocked_project(tmp_path: Path) -> Path:
    """The pilot with a speaker misnamed: the canon gate blocks it (rule ``name``) at its second stage."""
    folder = tmp_path / "blocked"
    shutil.copytree(ROOT / "examples" / "pilot", folder)
    data = json.loads((folder / "project.json").read_text())
    data["beats"][2]["dialogue"][0]["speaker_name"] = "Eli Crane"
    (folder / "project.json").write_text(json.dumps(data))
    return folder / "project.json"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Centre, Site, dict[str, AgentProcess], RecordingReceiver, Emitter]]:
    logs = tmp_path / "logs"
    with Centre(data_dir=tmp_path / "centre", logs=logs, interval_s=REPORT_S) as centre, \
            RecordingReceiver() as rx:
        data_dir = tmp_path / "site"
        data_dir.mkdir(mode=0o700)
        centre.add_site("t1", data_dir / "control.token")
        keys.init(tmp_path / "keys")
        bundle = keys.KeyFolder(tmp_path / "keys").bundle
        # h2's high-water mark is 1 %: its volume is "full" from its first report.
        agents = {host: AgentProcess(host, "t1", data_dir, tmp_path / host, bundle, logs / f"{host}.log",
                                     options=[*LOOSE, "--disk-high-water", water, "--interval", "0.25",
                                              "--control", centre.address, "--report-interval", str(REPORT_S)])
                  for host, water in (("h1", "1.0"), ("h2", "0.01"), ("h3", "1.0"))}
        config = tmp_path / "alerts.yaml"
        config.write_text(f"""
public_url: {centre.url}
tick: 0.2
flap_wait: 0
receivers:
  - name: phone
    urls: ["{rx.json_url('phone')}"]
routes:
  - receivers: [phone]
""")
        emitter = Emitter(centre.data_dir, config, logs / "alerts.log")
        with Site(data_dir=data_dir, logs=logs, site_id="t1", options=["--control", centre.address]) as site:
            try:
                with ThreadPoolExecutor(len(agents)) as starting:
                    list(starting.map(AgentProcess.start, agents.values()))
                emitter.start()
                yield centre, site, agents, rx, emitter
            finally:
                emitter.stop()
                for agent in agents.values():
                    agent.close()


def _messages(rx: RecordingReceiver) -> list[dict[str, Any]]:
    return [r.json() for r in rx.requests("/phone")]


def _arrived(rx: RecordingReceiver, alert_type: str, event: str, host: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((m for m in _messages(rx) if m["event"] == event and f"] {alert_type}" in m["title"]
                     and (host is None or f"({host})" in m["title"])), None)

    return wait_for(find, f"{event} {alert_type} at the receiver", timeout)


def _settled(centre: Centre, alert_id: int) -> bool:
    with Session(centre.engine) as session:
        return all(n.status != "pending" for n in session.scalars(
            select(NotificationRow).where(NotificationRow.alert_id == alert_id)))


def _alert(centre: Centre, alert_id: int) -> AlertRow:
    with Session(centre.engine) as session:
        row = session.scalars(select(AlertRow).where(AlertRow.id == alert_id)).one()
        session.expunge(row)
        return row


def test_real_site_events_reach_the_phone_once_are_acked_and_resolve_across_an_emitter_restart(
        tmp_path: Path, fleet: tuple[Centre, Site, dict[str, AgentProcess], RecordingReceiver, Emitter]) -> None:
    centre, site, agents, rx, emitter = fleet

    # A volume over its high-water mark.
    full = _arrived(rx, "disk_full", "firing", "h2")
    assert full["click_url"] == f"{centre.url}/hosts/t1/h2" and "over its high-water mark" in full["message"]
    assert _alert(centre, full["alert_id"]).host == "h2"

    # Before any worker runs: a run whose project bundle then vanishes from the store (its first stage
    # fails), and a project the canon gate blocks.
    failing = json.loads(site.cli("submit", ROOT / "examples" / "pilot" / "project.json", "--json").stdout)["run_id"]
    bundle_hash = wait_for(lambda: (site.client.run(failing) or {}).get("project_hash"), "the run at the site")
    [bundle] = [p for p in site.data_dir.rglob(bundle_hash) if p.is_file()]
    kept = bundle.read_bytes()
    bundle.unlink()
    run_id = json.loads(site.cli("submit", _blocked_project(tmp_path), "--json").stdout)["run_id"]
    site.start_worker("w1")

    failed = _arrived(rx, "job_failed", "firing", timeout=120)
    assert failed["click_url"] == f"{centre.url}/runs/t1/{failing}" and "script" in failed["message"]
    row = _alert(centre, failed["alert_id"])
    assert (row.run_id, row.stage, row.site_id) == (failing, "script", "t1")
    # The bundle is put back and the stage retried: the resolve follows (then the run is cancelled: no render).
    bundle.write_bytes(kept)
    site.cli("site", "retry-stage", failing, "script")
    assert _arrived(rx, "job_failed", "resolved")["alert_id"] == failed["alert_id"]
    site.cli("site", "cancel-run", failing, check=False)

    blocked = _arrived(rx, "canon_blocked", "firing", timeout=120)
    assert blocked["click_url"] == f"{centre.url}/runs/t1/{run_id}"
    assert "name" in blocked["message"] and "Eli Crane" in blocked["message"], blocked["message"]
    row = _alert(centre, blocked["alert_id"])
    assert (row.run_id, row.stage, row.tenant_id) == (run_id, "canon_gate", site.client.endpoints.tenant)
    # Its Ack button, on the real centre's web process (which reads the key the emitter made).
    acked = httpx.post(blocked["ack_url"], timeout=20)
    assert acked.status_code == 200, acked.text
    assert _alert(centre, blocked["alert_id"]).acked_by == "phone (ack link)"
    tampered = blocked["ack_url"][:-3] + ("AAA" if not blocked["ack_url"].endswith("AAA") else "BBB")
    assert httpx.post(tampered, timeout=20).status_code == 403

    # An agent killed: its host goes down (alone: the other two go on reporting).
    assert agents["h1"].process is not None
    agents["h1"].process.send_signal(signal.SIGKILL)
    agents["h1"].process.wait(timeout=30)
    down = _arrived(rx, "host_down", "firing", "h1")
    assert down["severity"] == "critical" and down["click_url"] == f"{centre.url}/hosts/t1/h1"

    # The emitter dies mid-alert (its firing delivered and recorded: a send whose outcome was not yet recorded
    # is sent again, at least once); the host comes back while it is dead; the restarted emitter sends the resolve.
    wait_for(lambda: _settled(centre, down["alert_id"]), "the firing's delivery recorded", 30)
    emitter.kill()
    agents["h1"].start()
    wait_for(lambda: _alert(centre, down["alert_id"]).status == "firing" and centre.wait_until(
        lambda fleet: any(h.host == "h1" and h.state == "healthy" for h in fleet.hosts()), "h1 back", 60),
        "h1 reporting again", 60)
    emitter.start()
    resolved = _arrived(rx, "host_down", "resolved", "h1")
    assert resolved["alert_id"] == down["alert_id"]

    time.sleep(2.0)  # ten more ticks: anything sent twice would show now
    counts: dict[tuple[int, str], int] = {}
    for m in _messages(rx):
        counts[(m["alert_id"], m["event"])] = counts.get((m["alert_id"], m["event"]), 0) + 1
    assert all(n == 1 for n in counts.values()), sorted(counts.items())
    assert (blocked["alert_id"], "resolved") not in counts and _alert(centre, blocked["alert_id"]).status == "acked"
