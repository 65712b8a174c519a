"""Operator actions from the pages reach the real command path: the page's drain button → Commands → the real
signer process → the real agent → the worker drains at the real site; an undrain the policy holds for
approval waits on /commands until a second operator approves it there (the requester cannot)."""

from __future__ import annotations

import html
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.api import create_app
from control_plane.commands import Commands
from control_plane.people import People
from control_plane.people_cli import fleet_engine
from control_plane.signer import SignerClient
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from site_scheduler.testing import SITE, Site
from tests.control_plane.conftest import COMMAND_WORKER, HarnessDirectory
from tests.control_plane.dashboard.conftest import Dash, FleetWriter, csrf_of, dashboard

POLICY = ("undrain-worker",)


@pytest.fixture
def centre(command_site: Site, command_agent: AgentProcess, command_keys: Path, tmp_path: Path) -> Iterator[Dash]:
    """The real app over the fleet database a real signer process signs from, dispatching to the real agent."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copytree(command_keys, data_dir / "keys")  # the key the agent trusts; only the signer reads it
    engine = fleet_engine(data_dir, None)
    with (tmp_path / "signer.log").open("wb") as log:
        signer = subprocess.Popen([sys.executable, "-m", "cinefleet", "control", "signer", "--data-dir",
                                   str(data_dir), *(f"--approval={a}" for a in POLICY)],
                                  stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: (data_dir / "signer.json").exists() or signer.poll() is not None, "the signer", 60)
        assert signer.poll() is None, (tmp_path / "signer.log").read_text()
        people = People(engine)
        commands = Commands(engine, HarnessDirectory(command_site, command_agent),
                            SignerClient(data_dir / "signer.sock"), policy=POLICY)
        with dashboard(create_app(engine, people, commands), engine, people) as made:
            yield made
    finally:
        signer.send_signal(signal.SIGTERM)
        signer.wait(timeout=30)
        engine.dispose()


def _worker_status(site: Site) -> str:
    return str(next(w["status"] for w in site.client.workers() if w["name"] == COMMAND_WORKER))


def _form(page: str, action: str) -> dict[str, list[str]]:
    """The fields of the page's form for ``action`` (what a browser would post when its button is pressed)."""
    for form in re.findall(r'<form method="post" action="/actions".*?</form>', page, re.S):
        if f'name="action" value="{action}"' in form:
            fields: dict[str, list[str]] = {}
            for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form):
                fields.setdefault(name, []).append(html.unescape(value))
            return fields
    raise AssertionError(f"no {action} button on the page")


def test_drain_from_the_workers_page_drains_the_worker_at_the_site(centre: Dash, command_site: Site) -> None:
    writer = FleetWriter(centre.engine, SITE)

    def replicate(status: str) -> None:
        """The worker's row as the site's shipper would push it (this centre has no shipper of its own)."""
        now = time.time()
        writer.push(("worker", (COMMAND_WORKER,), {
            "name": COMMAND_WORKER, "host": "cp-h1", "pid": 1, "status": status, "queues": ["cpu_queue"],
            "current_job": None, "since": now, "started_at": now}))

    replicate("idle")
    operator, other = centre.browser("operator"), centre.browser("operator2")
    viewer = centre.browser("viewer")
    assert 'action="/actions"' not in viewer.get("/workers").text
    drain = _form(operator.get("/workers").text, "drain-worker")
    assert drain["site"] == [SITE] and drain["target"] == [COMMAND_WORKER] and drain["action"] == ["drain-worker"]
    try:
        done = operator.post("/actions", data=drain)
        assert done.status_code == 303, done.text
        command = operator.get(done.headers["location"]).text
        assert "succeeded" in command and "OUTCOME_EXECUTED" in command, command
        wait_for(lambda: _worker_status(command_site) in ("draining", "drained"), "the worker drained at the site")
        # the undrain needs a second operator: it waits, and its requester is not offered (or allowed) Approve
        replicate("drained")
        held = operator.post("/actions", data=_form(operator.get("/workers").text, "undrain-worker"))
        assert held.status_code == 303
        command_path = held.headers["location"]
        command_id = command_path.rsplit("/", 1)[1]
        mine = operator.get(command_path).text
        assert "awaiting_approval" in mine and "another operator must approve" in mine
        assert f'action="/commands/{command_id}/approve"' not in mine
        refused = operator.post(f"{command_path}/approve", data={"csrf": csrf_of(mine)})
        assert refused.status_code == 403 and "expected a second person" in html.unescape(refused.text)
        assert _worker_status(command_site) in ("draining", "drained")  # nothing was sent
        assert f'action="/commands/{command_id}/approve"' not in viewer.get("/commands").text
        listing = other.get("/commands").text
        assert f'action="/commands/{command_id}/approve"' in listing
        approved = other.post(f"{command_path}/approve", data={"csrf": csrf_of(listing)})
        assert approved.status_code == 303 and approved.headers["location"] == command_path
        final = other.get(command_path).text
        assert "succeeded" in final and "by operator2" in final
        wait_for(lambda: _worker_status(command_site) in ("idle", "active"), "the worker undrained at the site")
        kinds = [r["kind"] for r in centre.audit_rows("request") + centre.audit_rows("approval")
                 + centre.audit_rows("outcome")]
        assert kinds.count("request") == 2 and kinds.count("approval") == 1 and kinds.count("outcome") == 2
    finally:  # the site and agent are shared with other modules: leave the worker taking jobs
        if _worker_status(command_site) in ("draining", "drained"):
            command_site.client.control("undrain-worker", worker=COMMAND_WORKER)
