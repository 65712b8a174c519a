"""The HTTP API over real HTTP (uvicorn on loopback), with the real signer process, agent and site:
the whole endpoint x role x tenant matrix (the fleet's read endpoints scoped to the caller's tenants),
and a drain and a cancel observed at the site, with the confirmation and the second person's approval
refused when missing or given by the requester."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from cinefleet.cli import app
from control_plane.api import create_app
from control_plane.commands import Commands
from control_plane.fleet_cli import TOKEN_ENV
from control_plane.people import People
from control_plane.people_cli import fleet_engine
from control_plane.signer import SignerClient
from control_plane.tables import RunRow
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from site_scheduler.testing import SITE, Site
from tests.control_plane.conftest import COMMAND_WORKER, HarnessDirectory

POLICY = ("undrain-worker", "cancel-run")
ROLES = ("viewer", "operator", "admin")
SCOPES = ("all", "own", "other")
OTHER_TENANT = "t-other"


@dataclass
class Centre:
    url: str
    engine: Engine
    site: Site
    tokens: dict[str, str] = field(default_factory=dict)

    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def call(self, method: str, path: str, user: str | None, **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        url = f"{self.url}{path}" if path == "/metrics" else f"{self.url}/api/v1{path}"
        return self.http.request(method, url, headers=headers, **options)


@pytest.fixture(scope="module")
def centre(command_site: Site, command_agent: AgentProcess, command_keys: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    root = tmp_path_factory.mktemp("centre")
    data_dir = root / "data"
    data_dir.mkdir()
    shutil.copytree(command_keys, data_dir / "keys")  # the key the agent trusts; the signer alone reads it
    engine = fleet_engine(data_dir, None)
    log = (root / "signer.log").open("wb")
    signer = subprocess.Popen([sys.executable, "-m", "cinefleet", "control", "signer", "--data-dir", str(data_dir),
                               *(f"--approval={a}" for a in POLICY)], stdout=log, stderr=log, start_new_session=True)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    made: Centre | None = None
    try:
        wait_for(lambda: (data_dir / "signer.json").exists() or signer.poll() is not None, "the signer", 30)
        assert signer.poll() is None, (root / "signer.log").read_text()
        commands = Commands(engine, HarnessDirectory(command_site, command_agent),
                            SignerClient(data_dir / "signer.sock"), policy=POLICY)
        people = People(engine)
        app = create_app(engine, people, commands)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, name="api", daemon=True)
        thread.start()
        wait_for(lambda: server is not None and server.started, "the API to listen", 30)
        port = server.servers[0].sockets[0].getsockname()[1]
        made = Centre(f"http://127.0.0.1:{port}", engine, command_site)
        own = command_site.client.endpoints.tenant
        assert own != OTHER_TENANT
        for role in ROLES:
            for scope in SCOPES:
                name = f"{role}-{scope}"
                people.add_user(name, role, None if scope == "all" else [own if scope == "own" else OTHER_TENANT])
                made.tokens[name] = people.create_token(name).token
        people.add_user("asker", "operator")
        made.tokens["asker"] = people.create_token("asker").token
        people.add_user("gone", "admin")
        gone = people.create_token("gone")
        people.revoke(gone.token_id)
        made.tokens["gone"] = gone.token
        made.tokens["garbage"] = "cft_not-a-token"
        yield made
    finally:
        if made is not None:
            made.http.close()
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=30)
        signer.send_signal(signal.SIGTERM)
        signer.wait(timeout=30)
        log.close()
        engine.dispose()


def _probe_run(site: Site) -> str:
    run_id = site.client.submit_probe(1)
    wait_for(lambda: site.client.run(run_id), "the probe run recorded at the site")
    return run_id


def _worker_status(site: Site) -> str:
    return str(next(w["status"] for w in site.client.workers() if w["name"] == COMMAND_WORKER))


def _replicated_runs(engine: Engine, tenants: dict[str, str]) -> None:
    """Runs in the fleet tables as ingest writes them (this centre has no site pushing to it)."""
    with Session(engine) as session, session.begin():
        for n, (run_id, tenant) in enumerate(sorted(tenants.items())):
            session.add(RunRow(site_id="s-read", run_id=run_id, tenant_id=tenant, project_path="p.json",
                               project_hash="ab" * 32, out_dir="/out", status="completed", detail="", episode=None,
                               submitted_seq=n + 1, submitted_at=1000.0 + n, finished_at=None, replicated_seq=n + 1,
                               updated_at=1000.0 + n))


def test_every_endpoint_for_every_role_and_tenant(centre: Centre) -> None:
    run_id = _probe_run(centre.site)
    centre.site.wait(run_id, timeout=60)
    users = [f"{role}-{scope}" for role in ROLES for scope in SCOPES]
    own = centre.site.client.endpoints.tenant
    _replicated_runs(centre.engine, {"r-own-1": own, "r-own-2": own, "r-other": OTHER_TENANT})

    def site_wide_command() -> str:
        """A command awaiting approval at a site with no agent: approving it never reaches an agent."""
        made = centre.call("POST", "/commands", "asker",
                           json={"site": "nowhere", "action": "undrain-worker", "target": ["w9"]})
        assert made.status_code == 201 and made.json()["status"] == "awaiting_approval", made.text
        return str(made.json()["command_id"])

    cases: dict[str, tuple[str, str, dict[str, Any] | None, set[str]]] = {
        "me": ("GET", "/me", None, set(users)),
        "fleet summary": ("GET", "/fleet", None, set(users)),
        "sites": ("GET", "/sites", None, set(users)),
        "hosts": ("GET", "/hosts", None, set(users)),
        "host history": ("GET", "/hosts/s-read/h1/history", None, set(users)),
        "workers": ("GET", "/workers", None, set(users)),
        "queues": ("GET", "/queues", None, set(users)),
        "runs": ("GET", "/runs", None, set(users)),
        "metrics": ("GET", "/metrics", None, {"viewer-all", "operator-all", "admin-all"}),
        "list commands": ("GET", "/commands", None, set(users)),
        "audit": ("GET", "/audit", None, {"admin-all"}),
        "site-wide command": ("POST", "/commands", {"site": SITE, "action": "undrain-worker",
                                                    "target": [COMMAND_WORKER]}, {"operator-all", "admin-all"}),
        "own tenant's run": ("POST", "/commands", {"site": SITE, "action": "cancel-run", "target": [run_id],
                                                   "confirm": run_id},
                             {"operator-all", "admin-all", "operator-own", "admin-own"}),
        "approve": ("POST", "/commands/{id}/approve", None, {"operator-all", "admin-all"}),
    }
    seen: dict[tuple[str, str], int] = {}
    for case, (method, path, body, allowed) in cases.items():
        for user in users:
            target = path.replace("{id}", site_wide_command()) if "{id}" in path else path
            response = centre.call(method, target, user, json=body)
            seen[case, user] = response.status_code
            expected = (201 if method == "POST" and "approve" not in path else 200) if user in allowed else 403
            assert response.status_code == expected, f"{case} as {user}: {response.status_code} {response.text}"
            if response.status_code == 403:
                assert user.split("-")[0] in response.text or "tenant" in response.text
        # Nobody without a live token gets anything from any endpoint
        for anonymous in (None, "gone", "garbage"):
            response = centre.call(method, path.replace("{id}", "0" * 32), anonymous, json=body)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", (case, anonymous)
    assert len(seen) == len(cases) * len(users)
    # Listings are scoped: a user of another tenant sees none of these commands, one of the site's tenant
    # sees only the run-scoped ones, an unlimited one sees them all
    listed = {user: centre.call("GET", "/commands?limit=500", user).json()["commands"] for user in
              ("viewer-other", "viewer-own", "viewer-all")}
    assert listed["viewer-other"] == []
    assert {c["action"] for c in listed["viewer-own"]} == {"cancel-run"}
    assert {c["action"] for c in listed["viewer-all"]} == {"cancel-run", "undrain-worker"}
    # Runs are tenant data: each caller sees its tenants' runs only, and another tenant's run is "not found"
    runs = {user: {r["run_id"] for r in centre.call("GET", "/runs?site=s-read", user).json()["items"]}
            for user in ("viewer-other", "viewer-own", "viewer-all")}
    assert runs == {"viewer-other": {"r-other"}, "viewer-own": {"r-own-1", "r-own-2"},
                    "viewer-all": {"r-own-1", "r-own-2", "r-other"}}
    assert centre.call("GET", "/runs/s-read/r-own-1", "viewer-own").json()["tenant_id"] == own
    assert centre.call("GET", "/runs/s-read/r-own-1", "viewer-other").status_code == 404
    summary = {user: centre.call("GET", "/fleet", user).json()["runs"] for user in ("viewer-other", "admin-all")}
    assert summary["viewer-other"] == {"completed": 1} and summary["admin-all"]["completed"] >= 3
    me = centre.call("GET", "/me", "operator-own").json()
    assert me["user"] == "operator-own" and me["role"] == "operator" and me["tenants"] == [
        centre.site.client.endpoints.tenant]


def test_a_drain_and_a_cancel_through_the_api_reach_the_site(centre: Centre) -> None:
    site = centre.site
    drained = centre.call("POST", "/commands", "operator-all",
                          json={"site": SITE, "action": "drain-worker", "target": [COMMAND_WORKER]})
    assert drained.status_code == 201 and drained.json()["status"] == "succeeded", drained.text
    try:
        wait_for(lambda: _worker_status(site) in ("draining", "drained"), "the worker draining at the site")
        run_id = _probe_run(site)  # the only worker is drained: the run waits
        # Destructive: refused without the typed confirmation, or with the wrong one
        for confirm in (None, "another-run"):
            refused = centre.call("POST", "/commands", "operator-all",
                                  json={"site": SITE, "action": "cancel-run", "target": [run_id], "confirm": confirm})
            assert refused.status_code == 422 and "confirm: value" in refused.json()["error"], refused.text
        asked = centre.call("POST", "/commands", "operator-all",
                            json={"site": SITE, "action": "cancel-run", "target": [run_id], "confirm": run_id})
        assert asked.status_code == 201 and asked.json()["status"] == "awaiting_approval", asked.text
        command_id = asked.json()["command_id"]
        # The approval: not by the requester, not by a viewer, not by another tenant's operator
        for user, why in (("operator-all", "its requester"), ("viewer-all", "needs operator"),
                          ("operator-other", "tenant")):
            refused = centre.call("POST", f"/commands/{command_id}/approve", user)
            assert refused.status_code == 403 and why in refused.json()["error"], (user, refused.text)
        assert site.run(run_id)["status"] not in ("cancelled", "succeeded")
        done = centre.call("POST", f"/commands/{command_id}/approve", "operator-own")
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["approver"]) == ("succeeded", "operator-own"), done.text
        assert site.wait(run_id, timeout=60)["status"] == "cancelled"
    finally:
        undrain = centre.call("POST", "/commands", "operator-all",
                              json={"site": SITE, "action": "undrain-worker", "target": [COMMAND_WORKER]})
        assert undrain.status_code == 201 and undrain.json()["status"] == "awaiting_approval"
        again = centre.call("POST", f"/commands/{undrain.json()['command_id']}/approve", "admin-all")
        assert again.json()["status"] == "succeeded", again.text
    wait_for(lambda: _worker_status(site) in ("idle", "active"), "the worker taking jobs again")
    # Every step is in the audit, in order
    entries = _all_audit(centre)
    steps = [(e["actor"], e["kind"]) for e in entries if e["subject"] == command_id]
    assert steps == [("operator-all", "request"), ("operator-all", "confirmation"), ("operator-all", "refused"),
                     ("operator-other", "refused"), ("operator-own", "approval"), ("signer", "signature"),
                     ("centre", "dispatch"), ("centre", "outcome")]
    # The viewer was stopped by the endpoint's role, before the command was read: audited under the request
    assert ("viewer-all", "refused", f"POST /api/v1/commands/{command_id}/approve") in [
        (e["actor"], e["kind"], e["subject"]) for e in entries]
    shown = centre.call("GET", f"/commands/{command_id}", "viewer-own").json()
    assert shown["outcome"] == "OUTCOME_EXECUTED" and shown["requester"] == "operator-all"
    assert centre.call("GET", f"/commands/{command_id}", "viewer-other").status_code == 404


def _all_audit(centre: Centre) -> list[dict[str, Any]]:
    """Every audit row, page by page (keyset on seq)."""
    entries: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = centre.call("GET", f"/audit?limit=500&after={after}", "admin-all").json()
        entries += page["entries"]
        after = page["next"]
    return entries


def test_bad_requests_are_4xx_naming_the_field(centre: Centre) -> None:
    def post(body: dict[str, Any]) -> httpx.Response:
        return centre.call("POST", "/commands", "operator-all", json=body)

    cases: list[tuple[httpx.Response, str]] = [
        (post({"site": SITE, "action": "format-disk", "target": ["x"]}), "action: value 'format-disk'"),
        (post({"site": SITE, "action": "pause-queue", "target": "cpu_queue"}), "body.target"),
        (post({"site": SITE, "action": "pause-queue", "target": []}), "body.target"),
        (post({"site": SITE, "action": "pause-queue", "target": ["x"], "extra": 1}), "body.extra"),
        (post({"action": "pause-queue", "target": ["cpu_queue"]}), "body.site"),
        (post({"site": SITE, "action": "pause-queue", "target": ["../etc"]}), "target: value '../etc'"),
        (centre.call("POST", "/commands", "operator-all", content=b"{not json"), "body"),
        (centre.call("GET", "/commands?limit=0", "viewer-all"), "query.limit"),
        (centre.call("GET", "/commands?status=done", "viewer-all"), "status: value 'done'"),
        (centre.call("GET", "/commands?after=nope", "viewer-all"), "after: value 'nope'"),
        (centre.call("GET", "/audit?after=-1", "admin-all"), "query.after"),
        (centre.call("GET", "/audit?kind=gossip", "admin-all"), "kind: value 'gossip'"),
        (centre.call("GET", f"/audit?after={2**64}", "admin-all"), "query.after"),
        (centre.call("GET", "/commands?limit=abc", "viewer-all"), "query.limit"),
        (post({"site": SITE, "action": "pause-queue", "target": ["x" * 300]}), "target: value"),
        (post({"site": "s" * 300, "action": "pause-queue", "target": ["x"]}), "site: value"),
        (post({"site": SITE, "action": "pause-queue", "target": ["x"], "confirm": 7}), "body.confirm"),
        (centre.call("GET", "/runs?limit=0", "viewer-all"), "query.limit"),
        (centre.call("GET", "/runs?limit=100000", "viewer-all"), "query.limit"),
        (centre.call("GET", "/runs?after=nope", "viewer-all"), "cursor: value 'nope'"),
        (centre.call("GET", "/runs?submitted_from=yesterday", "viewer-all"), "query.submitted_from"),
        (centre.call("GET", "/hosts/s/h/history?since=-5", "viewer-all"), "query.since"),
    ]
    for response, field_named in cases:
        assert response.status_code == 422 and field_named in response.json()["error"], response.text
    assert centre.call("POST", f"/commands/{'0' * 32}/approve", "operator-all").status_code == 404
    assert centre.call("GET", "/runs/nowhere/r1", "viewer-all").status_code == 404
    for odd in ("x" * 5000, "%00", "..%2F..%2Fetc", "\u00e9t\u00e9"):
        assert centre.call("GET", f"/commands/{odd}", "viewer-all").status_code == 404, odd
        assert centre.call("POST", f"/commands/{odd}/approve", "operator-all").status_code == 404, odd
    # Every endpoint states its role in the published OpenAPI (anyone may read the contract)
    paths = httpx.get(f"{centre.url}/api/v1/openapi.json").json()["paths"]
    stated = {(method.upper(), path): operation["description"].rsplit("Role: ", 1)[1]
              for path, operations in paths.items() for method, operation in operations.items()}
    reads = ("/fleet", "/sites", "/hosts", "/hosts/{site_id}/{host}/history", "/workers", "/queues", "/runs",
             "/runs/{site_id}/{run_id}")
    assert stated == {**{("GET", f"/api/v1{path}"): "viewer." for path in reads}, ("GET", "/metrics"): "viewer.",
                      ("GET", "/api/v1/me"): "viewer.", ("GET", "/api/v1/commands"): "viewer.",
                      ("GET", "/api/v1/commands/{command_id}"): "viewer.", ("POST", "/api/v1/commands"): "operator.",
                      ("POST", "/api/v1/commands/{command_id}/approve"): "operator.",
                      ("GET", "/api/v1/audit"): "admin.",
                      ("GET", "/api/v1/alerts"): "viewer.", ("GET", "/api/v1/alerts/{alert_id}"): "viewer.",
                      ("POST", "/api/v1/alerts/{alert_id}/ack"): "operator.", ("GET", "/api/v1/silences"): "viewer.",
                      ("POST", "/api/v1/silences"): "operator.",
                      ("DELETE", "/api/v1/silences/{silence_id}"): "operator.",
                      ("GET", "/ack/{token}"): "none (its signed URL is the credential).",
                      ("POST", "/ack/{token}"): "none (its signed URL is the credential)."}
    # Keyset pagination: two pages, in order, no overlap
    for worker in ("w1", "w2", "w3", "w4"):
        post({"site": "nowhere", "action": "undrain-worker", "target": [worker]})
    first = centre.call("GET", "/commands?limit=2", "viewer-all").json()
    second = centre.call("GET", f"/commands?limit=2&after={first['next']}", "viewer-all").json()
    ids = [c["command_id"] for c in first["commands"] + second["commands"]]
    assert len(ids) == len(set(ids)) == 4
    audit_page = centre.call("GET", "/audit?limit=3", "admin-all").json()
    following = centre.call("GET", f"/audit?limit=3&after={audit_page['next']}", "admin-all").json()
    assert [e["seq"] for e in audit_page["entries"] + following["entries"]] == [1, 2, 3, 4, 5, 6]


def test_the_fleet_commands_talk_to_the_centre_with_the_exit_codes_of_ops(centre: Centre) -> None:
    site = centre.site

    def fleet(user: str | None, *args: str) -> Result:
        env = {TOKEN_ENV: centre.tokens[user] if user else ""}
        return CliRunner().invoke(app, ["fleet", *args, "--control", centre.url] if "--control" not in args
                                  else ["fleet", *args], env=env)

    paused = fleet("operator-all", "pause-queue", "media_queue", "--site", SITE)
    assert paused.exit_code == 0 and paused.stdout.startswith("executed pause-queue media_queue"), paused.output
    try:
        assert next(q["paused"] for q in site.client.queues() if q["queue"] == "media_queue")
    finally:
        assert fleet("operator-all", "resume-queue", "media_queue", "--site", SITE).exit_code == 0
    # Refused by the centre's roles: 5; bad input (a destructive action unconfirmed, no token): 2
    viewer = fleet("viewer-all", "pause-queue", "media_queue", "--site", SITE)
    assert viewer.exit_code == 5 and "403" in viewer.stderr
    unconfirmed = fleet("operator-all", "restart-worker", COMMAND_WORKER, "--site", SITE)
    assert unconfirmed.exit_code == 2 and "confirm: value None" in unconfirmed.stderr
    assert fleet(None, "commands").exit_code == 2
    # A policy action waits for another person; the requester cannot approve it (5); the site then
    # refuses to undrain a worker that is not drained (4)
    waiting = fleet("operator-all", "undrain-worker", COMMAND_WORKER, "--site", SITE, "--json")
    assert waiting.exit_code == 0, waiting.output
    command_id = json.loads(waiting.stdout)["command_id"]
    assert fleet("operator-all", "approve", command_id).exit_code == 5
    refused = fleet("admin-all", "approve", command_id)
    assert refused.exit_code == 4 and "not draining or drained" in refused.stderr, refused.output
    assert fleet("admin-all", "approve", "0" * 32).exit_code == 2
    # Listings, as JSON
    listed = json.loads(fleet("viewer-all", "commands", "--status", "failed", "--json").stdout)
    assert command_id in [c["command_id"] for c in listed["commands"]]
    rows = json.loads(fleet("admin-all", "audit", "--kind", "approval", "--limit", "500", "--json").stdout)
    assert ("admin-all", command_id) in [(e["actor"], e["subject"]) for e in rows["entries"]]
    # The centre unreachable: 7; a --control that is no URL: 2
    assert fleet("admin-all", "commands", "--control", "http://127.0.0.1:1").exit_code == 7
    assert fleet("admin-all", "commands", "--control", "ftp://x").exit_code == 2
