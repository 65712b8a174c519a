"""A fleet database fed the way the centre feeds it, for the alert engine's tests.

Replicated rows go through the real :class:`~control_plane.ingest.Ingest` (outbox batches, in order,
exactly once) and host reports through the real :class:`~control_plane.health.Telemetry`, with the
test's clock, so the engine reads exactly what a centre would hold; only the site processes are
left out (the end-to-end tests have them). The clock is injectable so minute-scale timers (flap
wait, escalation, ack expiry) run in milliseconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.engine import Engine

from control_plane.alerts.config import AlertConfig, parse
from control_plane.alerts.delivery import Deliverer
from control_plane.alerts.engine import Emitter, receivers_of
from control_plane.alerts.testing import RecordingReceiver
from control_plane.health import Report, Telemetry
from control_plane.ingest import Batch, Event, Ingest

KEY = b"k" * 32


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Feed:
    """Pushes replicated rows and host reports into the fleet database as the centre's ingest does."""

    engine: Engine
    clock: Clock
    seqs: dict[str, int] = field(default_factory=dict)

    def push(self, site: str, entity: str, key: list[str], row: dict[str, Any], tenant: str = "t1") -> None:
        seq = self.seqs.get(site, 0) + 1
        self.seqs[site] = seq
        ack = Ingest(self.engine, self.clock).apply(Batch(site, [Event(seq, entity, tuple(key), "upsert", row, tenant,
                                                                        self.clock())], seq))
        assert ack.outcome == "applied", ack

    def run(self, site: str, run_id: str, status: str, detail: str = "", tenant: str = "t1") -> None:
        self.push(site, "run", [run_id], {
            "run_id": run_id, "tenant_id": tenant, "project_path": "p.json", "project_hash": "ab" * 32,
            "out_dir": "/out", "status": status, "detail": detail, "episode": None, "submitted_seq": 1,
            "submitted_at": self.clock(), "finished_at": None}, tenant)

    def stage(self, site: str, run_id: str, stage_id: str, status: str, attempts: int = 1, error: str = "",
              worker: str | None = None, tenant: str = "t1") -> None:
        self.push(site, "stage", [run_id, stage_id], {
            "run_id": run_id, "stage_id": stage_id, "tenant_id": tenant, "kind": "probe", "queue": "cpu_queue",
            "identity": "cd" * 32, "status": status, "depends_on": [], "args": {}, "output": None, "outputs": {},
            "attempts": attempts, "worker": worker, "message_id": None, "error": error, "seconds": 0.1}, tenant)

    def worker(self, site: str, name: str, host: str) -> None:
        self.push(site, "worker", [name], {"name": name, "host": host, "pid": 1, "status": "idle",
                                           "queues": ["cpu_queue"], "current_job": None, "since": self.clock()})

    def report(self, site: str, host: str, state: str = "healthy", used: float = 0.1) -> None:
        Telemetry(self.engine, self.clock).record(Report(
            site_id=site, host=host, state=state, interval_s=5.0,
            disks=({"mount": "/data", "used_bytes": int(used * 1000), "total_bytes": 1000,
                    "over_high_water": used >= 0.9},)))

    def heartbeat(self, site: str) -> None:
        """An empty push: the site is heard from."""
        Ingest(self.engine, self.clock).apply(Batch(site, [], self.seqs.get(site, 0)))


@dataclass
class Harness:
    engine: Engine
    clock: Clock
    feed: Feed
    rx: RecordingReceiver
    config: AlertConfig
    emitter: Emitter
    deliverer: Deliverer

    def tick(self) -> None:
        self.emitter.tick()
        assert self.deliverer.wait_idle(20), "delivery finished"

    def got(self, topic: str) -> list[dict[str, Any]]:
        """The JSON bodies ``topic`` received, in order."""
        return [r.json() for r in self.rx.requests(f"/{topic}")]

    def restart(self) -> None:
        """A new emitter and deliverer on the same database (as a restarted ``alerts serve``, stopped cleanly)."""
        self.deliverer.close()
        self.emitter.release()
        self.emitter = Emitter(self.engine, self.config, KEY, self.clock)
        self.deliverer = Deliverer(receivers_of(self.config), self.emitter.record, backoff_base_s=0.02,
                                   backoff_max_s=0.1)
        self.emitter.attach(self.deliverer)


def config_text(rx: RecordingReceiver, extra: str = "", site_timeout: float = 1e6) -> str:
    """Two json:// receivers (every field of the message in the body), a route for all, escalation to ``lead``."""
    return f"""
public_url: https://centre.example
site_timeout: {site_timeout}
receivers:
  - name: oncall
    urls: ["{rx.json_url('oncall')}"]
  - name: lead
    urls: ["{rx.json_url('lead')}"]
routes:
  - receivers: [oncall]
    escalation:
      - after: 10m
        receivers: [lead]
    repeat: 1
{extra}"""


@contextmanager
def serving(app: Any) -> Iterator[httpx.Client]:
    """``app`` served by uvicorn on a loopback port in a thread (as ``control serve`` does); a client for it."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=20) as client:
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline, "uvicorn started"
                time.sleep(0.02)
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@contextmanager
def harness(engine: Engine, extra: str = "", site_timeout: float = 1e6) -> Iterator[Harness]:
    clock = Clock()
    with RecordingReceiver() as rx:
        config = parse(config_text(rx, extra, site_timeout), "test.yaml")
        emitter = Emitter(engine, config, KEY, clock)
        deliverer = Deliverer(receivers_of(config), emitter.record, backoff_base_s=0.02, backoff_max_s=0.1)
        emitter.attach(deliverer)
        h = Harness(engine, clock, Feed(engine, clock), rx, config, emitter, deliverer)
        try:
            yield h
        finally:
            h.deliverer.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
