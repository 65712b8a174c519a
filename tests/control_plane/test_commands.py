"""The command path's core against a real site and a real agent: requests refused for the right reasons
(and audited), confirmation and second-person approval, then signed by the signer's core from the
database alone, dispatched over gRPC and observed at the site."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from control_plane import audit
from control_plane.commands import Commands
from control_plane.database import migrate, open_engine
from control_plane.errors import Conflict, ControlInputError, Forbidden, NotFound
from control_plane.people import People, Principal, Role
from control_plane.signer import CommandSigner
from ops_agent import keys
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from site_scheduler.keys import QUEUES
from site_scheduler.testing import SITE, Site
from tests.control_plane.conftest import COMMAND_HOST, COMMAND_WORKER, HarnessDirectory
from tests.site_scheduler.postgres import postgres_cluster

HOST, WORKER = COMMAND_HOST, COMMAND_WORKER


@pytest.fixture
def site(command_site: Site) -> Site:
    return command_site


@pytest.fixture
def agent(command_agent: AgentProcess) -> AgentProcess:
    return command_agent


@pytest.fixture
def key_folder(command_keys: Path) -> Path:
    return command_keys


@dataclass
class Centre:
    engine: Engine
    commands: Commands
    ana: Principal
    bo: Principal
    viewer: Principal
    other_tenant: Principal


@pytest.fixture
def centre(engine: Engine, site: Site, agent: AgentProcess, key_folder: Path) -> Centre:
    people = People(engine)
    tenant = site.client.endpoints.tenant
    for name, role, tenants in (("ana", "operator", None), ("bo", "admin", None), ("vic", "viewer", None),
                                ("ola", "operator", ["elsewhere"])):
        people.add_user(name, role, tenants)
    signer = CommandSigner(engine, keys.SigningKey.load(keys.KeyFolder(key_folder).signing_key),
                           policy=["drain-worker"])
    commands = Commands(engine, HarnessDirectory(site, agent), signer, policy=["drain-worker"])
    assert tenant != "elsewhere"
    return Centre(engine, commands, Principal("ana", Role.OPERATOR, None), Principal("bo", Role.ADMIN, None),
                  Principal("vic", Role.VIEWER, None), Principal("ola", Role.OPERATOR, frozenset({"elsewhere"})))


def _audit(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        return [(e.actor, e.kind, e.subject) for e in audit.entries(connection, limit=1000)]


def _paused(site: Site, queue: str) -> bool:
    return bool(next(q["paused"] for q in site.client.queues() if q["queue"] == queue))


def test_refused_requests_say_why_change_nothing_and_are_audited(centre: Centre, site: Site) -> None:
    commands = centre.commands
    with pytest.raises(ControlInputError, match="action: value 'format-disk'"):
        commands.request(centre.ana, "format-disk", "w1", SITE)
    with pytest.raises(ControlInputError, match="target: value 'a b'"):
        commands.request(centre.ana, "pause-queue", "a b", SITE)
    with pytest.raises(ControlInputError, match="takes RUN STAGE"):
        commands.request(centre.ana, "retry-stage", "only-a-run", SITE)
    with pytest.raises(Forbidden, match="needs operator"):
        commands.request(centre.viewer, "pause-queue", "cpu_queue", SITE)
    with pytest.raises(Forbidden, match="site-wide"):
        commands.request(centre.other_tenant, "pause-queue", "cpu_queue", SITE)
    # Destructive: the target's id must be typed
    with pytest.raises(ControlInputError, match="confirm: value None: restart-worker is destructive"):
        commands.request(centre.ana, "restart-worker", WORKER, SITE)
    with pytest.raises(ControlInputError, match="confirm: value 'cpw2'"):
        commands.request(centre.ana, "restart-worker", WORKER, SITE, confirm="cpw2")
    # A run of another tenant: refused to an operator limited to "elsewhere"
    run_id = site.client.submit_probe(1)
    wait_for(lambda: site.client.run(run_id), "the probe run recorded at the site")
    with pytest.raises(Forbidden, match="tenant"):
        commands.request(centre.other_tenant, "cancel-run", run_id, SITE, confirm=run_id)
    site.wait(run_id, timeout=60)
    with centre.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM commands")).scalar_one() == 0
    refused = [entry for entry in _audit(centre.engine) if entry[1] == "refused"]
    assert [actor for actor, _, _ in refused] == ["ana", "ana", "ana", "vic", "ola", "ana", "ana", "ola"]
    assert audit.verify(centre.engine).ok


def test_a_command_is_signed_sent_and_its_outcome_recorded(centre: Centre, site: Site, agent: AgentProcess) -> None:
    commands = centre.commands
    requested = commands.request(centre.ana, "pause-queue", "media_queue", SITE)
    assert requested.status == "requested" and not requested.needs_approval
    done = commands.execute(requested.command_id)
    assert (done.status, done.outcome, done.host) == ("succeeded", "OUTCOME_EXECUTED", HOST), done
    assert _paused(site, "media_queue")
    with pytest.raises(Conflict, match="status succeeded"):
        commands.execute(requested.command_id)
    resumed = commands.execute(commands.request(centre.bo, "resume-queue", "media_queue", SITE).command_id)
    assert resumed.status == "succeeded" and not _paused(site, "media_queue")
    # The agent ran what the database recorded: actor from the row, no approver
    entry = next(e for e in agent.audit_entries() if e.get("command_id") == requested.command_id)
    assert (entry["actor"], entry["actor_role"], entry["approved_by"]) == ("ana", "operator", "")
    steps = [(actor, kind) for actor, kind, subject in _audit(centre.engine) if subject == requested.command_id]
    assert steps == [("ana", "request"), ("signer", "signature"), ("centre", "dispatch"), ("centre", "outcome")]
    assert audit.verify(centre.engine).ok


def test_a_policy_action_waits_for_a_second_persons_approval(centre: Centre, site: Site,
                                                             agent: AgentProcess) -> None:
    commands = centre.commands
    waiting = commands.request(centre.ana, "drain-worker", WORKER, SITE)
    assert waiting.status == "awaiting_approval" and waiting.needs_approval
    with pytest.raises(Conflict, match="expected approved"):
        commands.execute(waiting.command_id)
    with pytest.raises(Forbidden, match="its requester"):
        commands.approve(centre.ana, waiting.command_id)
    with pytest.raises(Forbidden, match="needs operator"):
        commands.approve(centre.viewer, waiting.command_id)
    with pytest.raises(Forbidden, match="site-wide"):
        commands.approve(centre.other_tenant, waiting.command_id)
    with pytest.raises(NotFound):
        commands.approve(centre.bo, "0" * 32)
    approved = commands.approve(centre.bo, waiting.command_id)
    assert (approved.status, approved.approver) == ("approved", "bo")
    with pytest.raises(Conflict, match="status approved"):
        commands.approve(centre.bo, waiting.command_id)
    done = commands.execute(waiting.command_id)
    assert done.status == "succeeded", done
    try:
        wait_for(lambda: next(w for w in site.client.workers() if w["name"] == WORKER)["status"]
                 in ("draining", "drained"), "the worker draining")
        entry = next(e for e in agent.audit_entries() if e.get("command_id") == waiting.command_id)
        assert (entry["actor"], entry["approved_by"]) == ("ana", "bo"), "both people are in the signed payload"
    finally:
        undone = commands.execute(commands.request(centre.bo, "undrain-worker", WORKER, SITE).command_id)
        assert undone.status == "succeeded"
    kinds = [kind for _, kind, subject in _audit(centre.engine) if subject == waiting.command_id]
    assert kinds == ["request", "refused", "refused", "refused", "approval", "refused", "signature", "dispatch",
                     "outcome"]


def test_two_executions_of_one_command_at_once_sign_and_send_it_once(centre: Centre, site: Site,
                                                                     agent: AgentProcess) -> None:
    commands = centre.commands
    asked = commands.request(centre.ana, "pause-queue", "local_ai_queue", SITE)
    barrier = threading.Barrier(2)

    def execute() -> str:
        barrier.wait()
        try:
            return commands.execute(asked.command_id).status
        except Conflict:
            return "conflict"

    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(lambda _: execute(), range(2)))
        final = commands.get(asked.command_id)
        assert final.status == "succeeded" and _paused(site, "local_ai_queue"), (outcomes, final)
        assert "succeeded" in outcomes
    finally:
        commands.execute(commands.request(centre.ana, "resume-queue", "local_ai_queue", SITE).command_id)
    kinds = [kind for _, kind, subject in _audit(centre.engine) if subject == asked.command_id]
    assert kinds.count("signature") == 1 and kinds.count("dispatch") == 1 and kinds.count("outcome") == 1, kinds
    at_agent = [e["outcome"] for e in agent.audit_entries() if e.get("command_id") == asked.command_id]
    assert at_agent == ["DISPATCHED", "OUTCOME_EXECUTED"], "the agent received it once"


def test_the_listing_is_scoped_to_tenants_and_pages_by_keyset(centre: Centre) -> None:
    commands = centre.commands
    made = [commands.request(centre.ana, "pause-queue", q, SITE).command_id for q in QUEUES]
    first = commands.list(centre.bo, limit=3)
    rest = commands.list(centre.bo, limit=3, after=first[-1].command_id)
    assert [c.command_id for c in first + rest] == made[::-1]
    assert commands.list(centre.other_tenant) == [], "site-wide commands are not shown to a tenant-limited user"
    assert [c.target for c in commands.list(centre.viewer, status="requested", limit=1)] == [(QUEUES[-1],)]
    with pytest.raises(ControlInputError, match="status: value 'done'"):
        commands.list(centre.bo, status="done")
    with pytest.raises(ControlInputError, match="after: value 'nope'"):
        commands.list(centre.bo, after="nope")
    assert json.loads(json.dumps(first[0].as_dict()))["target"] == [QUEUES[-1]]


def test_on_postgresql_the_path_from_request_to_outcome_works_the_same(site: Site, agent: AgentProcess,
                                                                      key_folder: Path) -> None:
    with postgres_cluster() as url:
        engine = open_engine(url)
        try:
            migrate(engine)
            people = People(engine)
            people.add_user("ana", "operator")
            people.add_user("bo", "operator")
            signer = CommandSigner(engine, keys.SigningKey.load(keys.KeyFolder(key_folder).signing_key),
                                   policy=["pause-queue"], checkpoint_every=3)
            commands = Commands(engine, HarnessDirectory(site, agent), signer, policy=["pause-queue"])
            ana, bo = Principal("ana", Role.OPERATOR, None), Principal("bo", Role.OPERATOR, None)
            asked = commands.request(ana, "pause-queue", "external_ai_queue", SITE)
            with pytest.raises(Forbidden, match="its requester"):
                commands.approve(ana, asked.command_id)
            commands.approve(bo, asked.command_id)
            done = commands.execute(asked.command_id)
            assert (done.status, done.approver) == ("succeeded", "bo"), done
            assert _paused(site, "external_ai_queue")
            resumed = commands.request(bo, "resume-queue", "external_ai_queue", SITE)
            assert commands.execute(resumed.command_id).status == "succeeded"
            assert not _paused(site, "external_ai_queue")
            report = audit.verify(engine)
            assert report.ok and report.checkpoints >= 1, report
        finally:
            engine.dispose()
