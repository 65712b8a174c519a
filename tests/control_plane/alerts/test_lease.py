"""Two real ``alerts serve`` processes on one centre database: one sends, the other stands by and takes over.

The fleet database is fed through the centre's real ingest and telemetry code at wall-clock time (a host
that says it is offline is down at once; its next healthy report brings it back), the emitters are
``python -m cinefleet alerts serve`` subprocesses, and the receiver is the recording HTTP server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.alerts.testing import RecordingReceiver
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.tables import NotificationRow
from pipeline.testing import wait_for
from tests.control_plane.alerts.fleetfeed import Clock, Feed
from tests.control_plane.alerts.test_end_to_end import Emitter

LEASE_S = 2.0


class WallClock(Clock):
    """The feed at real time: the emitter subprocesses judge with ``time.time()``."""

    def __call__(self) -> float:
        return time.time()


class Reporting:
    """The site pushing and its agents reporting every 0.5 s, as they do, in a thread: a fleet silent while the
    emitters start would be judged disconnected. ``states`` is what each host says of itself."""

    def __init__(self, feed: Feed, states: dict[str, str]) -> None:
        self.feed, self.states = feed, states
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.feed.heartbeat("s1")
            for host, state in list(self.states.items()):
                self.feed.report("s1", host, state=state)
            self.stopping.wait(0.5)

    def __enter__(self) -> Reporting:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", "alerts", *args], capture_output=True, text=True,
                          timeout=60, check=True)


def _status(engine: Engine, alert_id: int) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(NotificationRow.status).where(NotificationRow.alert_id == alert_id)))


def _events(rx: RecordingReceiver) -> list[tuple[int, str]]:
    return [(m["alert_id"], m["event"]) for m in (r.json() for r in rx.requests("/phone"))]


def test_two_serve_processes_send_once_and_the_standby_takes_over_after_a_kill(tmp_path: Path) -> None:
    centre = tmp_path / "centre"
    centre.mkdir()
    engine = open_engine(sqlite_url(centre / "fleet.db"))
    migrate(engine)
    states = {"h1": "healthy", "h2": "healthy"}
    with Reporting(Feed(engine, WallClock()), states), RecordingReceiver() as rx:
        config = tmp_path / "alerts.yaml"
        config.write_text(f"""
tick: 0.2
lease: {LEASE_S}
site_timeout: 3600
receivers:
  - name: phone
    urls: ["{rx.json_url('phone')}"]
routes:
  - receivers: [phone]
""")
        first = Emitter(centre, config, tmp_path / "first.log")
        second = Emitter(centre, config, tmp_path / "second.log")
        try:
            first.start()
            wait_for(lambda: "holds the lease" in first.log.read_text(), "the first emitter holding the lease")
            second.start()
            wait_for(lambda: "standby, the lease is held by" in second.log.read_text(), "the second standing by")
            assert first.process is not None and second.process is not None
            status = json.loads(_cli("status", "--control-dir", str(centre), "--json").stdout)
            assert [(e["role"], e["pid"]) for e in status] == [("active", first.process.pid),
                                                               ("standby", second.process.pid)]
            listed = _cli("list", "--control-dir", str(centre)).stdout
            assert "# emitter standby: " in listed and f"pid {second.process.pid} (sends nothing" in listed

            # h1 says it is offline: one page, whichever process sees it.
            states["h1"] = "offline"
            rx.wait_for(1, 30, "/phone")
            [(alert_id, _)] = _events(rx)
            wait_for(lambda: _status(engine, alert_id) == ["sent"], "the firing's delivery recorded")
            time.sleep(1.0)  # five ticks of each: a second sender would show now
            assert _events(rx) == [(alert_id, "firing")], [r.json()["title"] for r in rx.requests("/phone")]

            # The active one is killed; h1 comes back while no one sends: the standby resolves it once.
            killed = time.monotonic()
            first.kill()
            states["h1"] = "healthy"
            rx.wait_for(2, 30, "/phone")
            took = time.monotonic() - killed
            assert took < LEASE_S + 3, f"the standby took {took:.1f} s to take over (lease {LEASE_S} s)"
            assert "holds the lease" in second.log.read_text()
            time.sleep(1.0)
            assert _events(rx) == [(alert_id, "firing"), (alert_id, "resolved")]
        finally:
            first.stop()
            second.stop()
            engine.dispose()
