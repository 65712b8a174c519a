"""The dashboard's fixtures: the real app (``create_app``) on uvicorn over loopback and a real SQLite fleet
database, people of every role, browsers (httpx clients keeping cookies) signed in through the login
form, and fleet data written through the real ingest and telemetry paths."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from control_plane import audit
from control_plane.api import create_app
from control_plane.commands import Commands
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.directory import FleetDirectory
from control_plane.health import Report, Telemetry
from control_plane.ingest import Batch, Event, Ingest
from control_plane.people import People
from control_plane.signer import SignerClient
from pipeline.testing import wait_for

ROLES = ("viewer", "operator", "admin")
SITE = "s1"
TENANT = "acme"


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on uvicorn in a thread on a free loopback port; its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the dashboard to listen", 30)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def login_nonce(page: str) -> str:
    found = re.search(r'name="login_nonce" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def sign_in(browser: httpx.Client, token: str, next_path: str = "/") -> httpx.Response:
    """The login form as a person fills it: fetch it (its nonce cookie), post the token."""
    form = browser.get(f"/login?next={next_path}")
    assert form.status_code == 200, form.text
    return browser.post("/login", data={"token": token, "login_nonce": login_nonce(form.text), "next": next_path})


@dataclass
class Dash:
    url: str
    app: FastAPI
    engine: Engine
    people: People
    tokens: dict[str, str] = field(default_factory=dict)
    browsers: list[httpx.Client] = field(default_factory=list)

    def browser(self, user: str | None = None) -> httpx.Client:
        """A client keeping cookies; signed in as ``user`` when given."""
        client = httpx.Client(base_url=self.url, timeout=30)
        self.browsers.append(client)
        if user is not None:
            answer = sign_in(client, self.tokens[user])
            assert answer.status_code == 303, answer.text
        return client

    def audit_rows(self, kind: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [e.as_dict() for e in audit.entries(connection, limit=500) if e.kind == kind]


def make_people(people: People, tokens: dict[str, str]) -> None:
    for role in ROLES:
        people.add_user(role, role)
        tokens[role] = people.create_token(role).token
    people.add_user("viewer-other", "viewer", ["t-other"])
    tokens["viewer-other"] = people.create_token("viewer-other").token
    people.add_user("operator2", "operator")
    tokens["operator2"] = people.create_token("operator2").token


@contextmanager
def dashboard(app: FastAPI, engine: Engine, people: People) -> Iterator[Dash]:
    """``app`` served on loopback with the test people made, their browsers closed afterwards."""
    with serving(app) as url:
        made = Dash(url, app, engine, people)
        make_people(people, made.tokens)
        try:
            yield made
        finally:
            for browser in made.browsers:
                browser.close()


@pytest.fixture
def dash_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def dash(dash_engine: Engine, tmp_path: Path) -> Iterator[Dash]:
    """The real app without a signer (commands to it fail as "signer unavailable", recorded as such)."""
    people = People(dash_engine)
    commands = Commands(dash_engine, FleetDirectory(dash_engine), SignerClient(tmp_path / "no-signer.sock"))
    with dashboard(create_app(dash_engine, people, commands), dash_engine, people) as made:
        yield made


def run_row(run_id: str, status: str, submitted_at: float, tenant: str = TENANT) -> dict[str, Any]:
    return {"run_id": run_id, "site_id": SITE, "tenant_id": tenant, "project_path": "story.json",
            "project_hash": "ab" * 32, "out_dir": "/out", "status": status, "detail": "", "episode": None,
            "submitted_seq": 1, "submitted_at": submitted_at, "finished_at": None}


def stage_row(run_id: str, stage_id: str, status: str, worker: str | None, seconds: float | None,
              output: str | None = None, error: str = "") -> dict[str, Any]:
    return {"run_id": run_id, "stage_id": stage_id, "site_id": SITE, "tenant_id": TENANT, "kind": stage_id,
            "queue": "cpu_queue", "identity": "i" * 64, "status": status, "depends_on": [], "args": {},
            "output": output, "outputs": {}, "attempts": 1, "worker": worker, "message_id": None, "error": error,
            "seconds": seconds, "cache_hits": 2, "cache_misses": 1}


class FleetWriter:
    """Writes a site's replicated rows through :class:`Ingest` (in order, as a shipper pushes them) and host
    reports through :class:`Telemetry`, as the gRPC servicer does."""

    def __init__(self, engine: Engine, site: str = SITE) -> None:
        self.ingest, self.telemetry, self.site = Ingest(engine), Telemetry(engine), site
        self.seq = self.ingest.cursor(site)

    def push(self, *events: tuple[str, tuple[str, ...], dict[str, Any]], tenant: str = TENANT) -> None:
        batch = []
        for entity, key, row in events:
            self.seq += 1
            batch.append(Event(self.seq, entity, key, "upsert", row, tenant, committed_at=time.time()))
        ack = self.ingest.apply(Batch(self.site, batch, site_head=self.seq))
        assert ack.cursor == self.seq, ack

    def populate(self) -> None:
        """A site with a host, two workers, its queues, a finished run, a failed one and one in flight."""
        now = time.time()
        self.push(
            ("worker", ("w1",), {"name": "w1", "host": "h1", "pid": 11, "status": "idle", "queues": ["cpu_queue"],
                                 "current_job": None, "since": now - 60, "started_at": now - 60}),
            ("worker", ("w2",), {"name": "w2", "host": "h1", "pid": 12, "status": "draining",
                                 "queues": ["media_queue"], "current_job": "r-live/render", "since": now - 5,
                                 "started_at": now - 60, "drain_until": now + 3600}),
            *(("queue", (q,), {"name": q, "paused": q == "media_queue", "completed": 3})
              for q in ("cpu_queue", "media_queue")),
            ("run", ("r-done",), run_row("r-done", "completed", now - 300)),
            ("run", ("r-failed",), run_row("r-failed", "failed", now - 200)),
            ("run", ("r-live",), run_row("r-live", "running", now - 100)),
            ("run", ("r-other",), run_row("r-other", "completed", now - 50, "t-other")),
            ("stage", ("r-done", "script"), stage_row("r-done", "script", "done", "w1", 2.0, "cd" * 32)),
            ("stage", ("r-failed", "script"), stage_row("r-failed", "script", "failed", "w1", 1.0,
                                                         error="ValueError: <b>bad</b> script")),
            ("stage", ("r-live", "script"), stage_row("r-live", "script", "done", "w1", 3.0, "ef" * 32)),
            ("stage", ("r-live", "render"), stage_row("r-live", "render", "running", "w2", None)),
            ("stage", ("r-live", "assemble"), stage_row("r-live", "assemble", "waiting", None, None)),
        )
        for _ in range(3):
            self.telemetry.record(Report(
                SITE, "h1", "degraded", agent_address="127.0.0.1:1", interval_s=5.0, reasons=("disk / 95 % ≥ 90 %",),
                sampled_at=now, load_1m=1.5, load_5m=1.2, cpu_count=4, memory_used_bytes=2 << 30,
                memory_total_bytes=8 << 30,
                disks=({"mount": "/", "used_bytes": 95, "total_bytes": 100, "high_water": 0.9,
                        "over_high_water": True},),
                temperatures=({"sensor": "cpu", "celsius": 61.0},),
                workers=({"name": "w1", "status": "idle", "pid": 11, "queues": ["cpu_queue"], "current_job": ""},)))


@pytest.fixture
def populated(dash: Dash) -> Dash:
    FleetWriter(dash.engine).populate()
    return dash
