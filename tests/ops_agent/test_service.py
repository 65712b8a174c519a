"""The agent's command service without gRPC: bytes in, an audited CommandResult out; one outcome ladder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ops_agent import actions, audit, keys
from ops_agent.audit import AuditLog
from ops_agent.envelope import Verifier, new_payload, sign
from ops_agent.errors import Rejected
from ops_agent.keys import SigningKey, TrustBundle
from ops_agent.nonces import NonceStore
from ops_agent.service import CommandService, Verdict, outcome_of
from ops_agent.site_link import SiteLink
from ops_agent.trust import TrustFile
from protos import ops_agent_pb2 as pb
from protos.actions import UnknownAction
from site_scheduler.errors import ControlRefused, SiteError
from site_scheduler.testing import SITE, Site

HOST = "service-host"


def test_the_outcome_ladder() -> None:
    assert outcome_of(Rejected(pb.REJECT_EXPIRED, "expires_at: too old"), SITE) == Verdict(
        pb.OUTCOME_REJECTED, pb.REJECT_EXPIRED, "expires_at: too old")
    assert outcome_of(ControlRefused("queue 'cpu_queue' is already paused"), SITE) == Verdict(
        pb.OUTCOME_REFUSED, pb.REJECT_REASON_UNSPECIFIED,
        f"refused by site {SITE}: queue 'cpu_queue' is already paused")
    assert outcome_of(UnknownAction("action 9: not allow-listed"), SITE) == Verdict(
        pb.OUTCOME_FAILED, pb.REJECT_REASON_UNSPECIFIED, "action 9: not allow-listed")
    for down in (SiteError("no answer"), redis.exceptions.ConnectionError("refused")):
        verdict = outcome_of(down, SITE)
        assert verdict.outcome == pb.OUTCOME_FAILED and verdict.expected
        assert verdict.message == f"site {SITE} unreachable: {type(down).__name__}: {down}"
    bug = outcome_of(KeyError("stage_id"), SITE)
    assert bug == Verdict(pb.OUTCOME_FAILED, pb.REJECT_REASON_UNSPECIFIED, "internal error: KeyError: 'stage_id'",
                          expected=False)


@dataclass
class Service:
    commands: CommandService
    key: SigningKey
    audit: Path


@pytest.fixture
def service(site: Site, tmp_path: Path) -> Iterator[Service]:
    key, _ = keys.init(tmp_path / "keys")
    log, nonces, link = AuditLog(tmp_path / "audit.jsonl"), NonceStore(tmp_path / "nonces.sqlite"), SiteLink(
        SITE, site.data_dir)
    targets = actions.Targets(HOST, SITE, link.client)
    verifier = Verifier(HOST, SITE, TrustBundle(0, ()), nonces, lambda payload: link.call(lambda _: targets(payload)))
    trust = TrustFile(keys.KeyFolder(tmp_path / "keys").bundle, lambda bundle: setattr(verifier, "trust", bundle),
                      tmp_path / "trust-version")
    commands = CommandService(HOST, verifier, lambda payload: link.call(lambda s: actions.execute(payload, s)), log,
                              trust)
    try:
        yield Service(commands, key, tmp_path / "audit.jsonl")
    finally:
        log.close()
        nonces.close()
        link.close()


def _raw(service: Service, action: pb.Action, queue: str) -> bytes:
    payload = new_payload(audience_host=HOST, site_id=SITE, action=action, target=pb.QueueRef(name=queue))
    return sign(payload, service.key).SerializeToString()


def test_the_command_service_verifies_executes_and_audits_bytes(service: Service, site: Site) -> None:
    # Given a signed command's bytes, as any transport would hand them over
    pause = _raw(service, pb.ACTION_PAUSE_QUEUE, "local_ai_queue")
    done = service.commands.execute(pause)
    assert done.outcome == pb.OUTCOME_EXECUTED and done.host == HOST and "paused" in done.message
    assert next(q for q in site.client.queues() if q["queue"] == "local_ai_queue")["paused"] is True
    # The same bytes again: the first result, not a second run
    again = service.commands.execute(pause)
    assert again.replayed_result and again.outcome == pb.OUTCOME_EXECUTED and again.command_id == done.command_id
    # A new command the site refuses, one that fails a check, and bytes that are no command at all
    refused = service.commands.execute(_raw(service, pb.ACTION_PAUSE_QUEUE, "local_ai_queue"))
    assert refused.outcome == pb.OUTCOME_REFUSED and "already paused" in refused.message
    unknown = service.commands.execute(_raw(service, pb.ACTION_PAUSE_QUEUE, "gpu_queue"))
    assert (unknown.outcome, unknown.reason) == (pb.OUTCOME_REJECTED, pb.REJECT_UNKNOWN_TARGET)
    garbage = service.commands.execute(b"\xff not a command")
    assert (garbage.outcome, garbage.reason) == (pb.OUTCOME_REJECTED, pb.REJECT_MALFORMED)
    assert service.commands.execute(_raw(service, pb.ACTION_RESUME_QUEUE, "local_ai_queue")).outcome == (
        pb.OUTCOME_EXECUTED)
    # Every command is on the audit chain: dispatch and outcome for the two that ran
    assert audit.verify(service.audit).ok
    outcomes = [json.loads(line)["outcome"] for line in service.audit.read_text().splitlines()]
    assert outcomes == ["DISPATCHED", "OUTCOME_EXECUTED", "OUTCOME_EXECUTED", "DISPATCHED", "OUTCOME_REFUSED",
                        "OUTCOME_REJECTED", "OUTCOME_REJECTED", "DISPATCHED", "OUTCOME_EXECUTED"]
