"""Issue 8, the audit volume: rejections counted per peer and reason, rotation with the chain carried on,
and an audit that cannot be written answered UNAVAILABLE with nothing executed and health degraded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ops_agent import actions, audit, keys
from ops_agent.audit import AuditLog, AuditRecord
from ops_agent.envelope import Verifier, new_payload, sign
from ops_agent.errors import AuditUnavailable
from ops_agent.keys import TrustBundle
from ops_agent.nonces import NonceStore
from ops_agent.rejections import RejectionWindows
from ops_agent.service import CommandService
from ops_agent.site_link import SiteLink
from ops_agent.testing import AgentProcess
from ops_agent.trust import TrustFile
from pipeline.testing import wait_for
from protos import ops_agent_pb2 as pb
from protos import telemetry_pb2 as telemetry
from site_scheduler.testing import SITE, Site

HOST = "audit-host"
GENEROUS = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class Service:
    """A command service on a real site, its audit at ``audit_path`` and its rejection windows on ``clock``."""

    def __init__(self, site: Site, folder: Path, audit_path: Path) -> None:
        self.key, _ = keys.init(folder / "keys")
        self.clock = Clock()
        self.nonces, self.link = NonceStore(folder / "nonces.sqlite"), SiteLink(SITE, site.data_dir)
        targets = actions.Targets(HOST, SITE, self.link.client)
        self.verifier = Verifier(HOST, SITE, TrustBundle(0, ()), self.nonces,
                                 lambda payload: self.link.call(lambda _: targets(payload)))
        trust = TrustFile(keys.KeyFolder(folder / "keys").bundle,
                          lambda bundle: setattr(self.verifier, "trust", bundle), folder / "trust-version")
        self.log = AuditLog(audit_path)
        self.commands = CommandService(HOST, self.verifier,
                                       lambda payload: self.link.call(lambda s: actions.execute(payload, s)),
                                       self.log, trust, RejectionWindows(60.0, clock=self.clock))

    def pause(self, queue: str = "external_ai_queue") -> pb.SignedCommand:
        return sign(new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_PAUSE_QUEUE,
                                target=pb.QueueRef(name=queue), ttl_s=60), self.key)

    def close(self) -> None:
        self.log.close()
        self.nonces.close()
        self.link.close()


@pytest.fixture
def service(site: Site, tmp_path: Path) -> Iterator[Service]:
    made = Service(site, tmp_path, tmp_path / "audit.jsonl")
    yield made
    made.close()


def _paused(site: Site, queue: str = "external_ai_queue") -> bool:
    return bool(next(q["paused"] for q in site.client.queues() if q["queue"] == queue))


def _entries(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- rejections counted per peer and reason per interval -----------------------------------------


def test_a_flood_of_rejections_is_one_line_per_peer_and_reason_then_a_summary(service: Service) -> None:
    # When one peer sends 1000 requests that are not envelopes, and another peer one
    for n in range(1000):
        result = service.commands.execute(b"\xff\xff\xff\xff" + n.to_bytes(4, "big"), "ipv4:127.0.0.1")
        assert (result.outcome, result.reason) == (pb.OUTCOME_REJECTED, pb.REJECT_MALFORMED)
    service.commands.execute(b"\xff\xff\xff\xff", "ipv4:10.0.0.9")
    # Then each is answered, but the audit holds one full line per (peer, reason)
    lines = _entries(service.log.path)
    assert [(e["peer"], e["reason"]) for e in lines] == [("ipv4:127.0.0.1", "REJECT_MALFORMED"),
                                                         ("ipv4:10.0.0.9", "REJECT_MALFORMED")]
    assert all("count" not in e for e in lines)
    # And nothing is summarised before the interval ends
    service.commands.flush_audit()
    assert len(_entries(service.log.path)) == 2
    # When the interval has passed, one summary line carries the count of the rest
    service.clock.now += 60
    service.commands.flush_audit()
    summary = _entries(service.log.path)[-1]
    assert (summary["peer"], summary["reason"], summary["count"]) == ("ipv4:127.0.0.1", "REJECT_MALFORMED", 999)
    assert len(_entries(service.log.path)) == 3, "the peer rejected once has nothing to summarise"
    # And the next rejection of that peer starts a new window, written in full
    service.commands.execute(b"\xff", "ipv4:127.0.0.1")
    assert "count" not in _entries(service.log.path)[-1]
    assert audit.verify(service.log.path).ok


def test_the_windows_are_capped_so_cycling_peers_cannot_grow_them() -> None:
    windows = RejectionWindows(60.0, clock=lambda: 0.0, max_windows=3)
    assert [windows.admit(f"peer-{n}", "R")[0] for n in range(6)] == [True, True, True, True, False, False]
    assert {s.peer: s.count for s in windows.drain()} == {"other peers": 2}


# -- rotation ------------------------------------------------------------------------------------


def _rotated_log(path: Path, count: int) -> None:
    with AuditLog(path, clock=lambda: 1.0, max_bytes=2000) as log:
        for n in range(count):
            log.append(AuditRecord(command_id=f"c{n}", outcome="OUTCOME_EXECUTED", message="x" * 100))


def test_the_log_rotates_at_its_size_and_the_chain_runs_on_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _rotated_log(path, 60)
    rotated = audit.rotated_files(path)
    assert len(rotated) >= 3 and all(f.stat().st_size <= 2000 for f in [*rotated, path])
    report = audit.verify(path)
    assert report.ok and report.entries == 60 and report.files == len(rotated) + 1, report
    # A reopened log continues the chain where it stopped, across the files
    _rotated_log(path, 5)
    assert audit.verify(path).entries == 65
    verified = _cli("audit", "verify", path)
    files = len(audit.rotated_files(path)) + 1
    assert verified.returncode == 0 and verified.stdout.strip() == f"audit: 65 entries in {files} files, chain intact"


def test_a_break_in_a_rotated_set_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _rotated_log(path, 60)
    first, second = audit.rotated_files(path)[:2]
    # An edited line in the second file
    lines = second.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"OUTCOME_EXECUTED", b"OUTCOME_REFUSED")
    second.write_bytes(b"".join(lines))
    report = audit.verify(path)
    assert (report.path, report.line) == (second, 3) and report.problem.startswith("edited"), report
    broken = _cli("audit", "verify", path)
    assert broken.returncode != 0 and f"{second}: line 3" in broken.stderr, broken.stderr
    # A rotated file removed: the break is the first line of the file after it
    second.unlink()
    report = audit.verify(path)
    assert report.line == 1 and report.problem.startswith("deleted") and report.path != first, report


# -- an audit that cannot be written --------------------------------------------------------------


def test_an_unwritable_audit_answers_unavailable_executes_nothing_and_gives_the_nonce_back(
        site: Site, tmp_path: Path) -> None:
    full = tmp_path / "audit.jsonl"
    full.symlink_to("/dev/full")  # every write: ENOSPC
    made = Service(site, tmp_path, full)
    try:
        command = made.pause()
        with pytest.raises(AuditUnavailable) as refused:
            made.commands.execute(command.SerializeToString(), "ipv4:127.0.0.1")
        assert "No space left on device" in str(refused.value) and str(tmp_path) not in str(refused.value)
        assert made.log.problem is not None
        assert not _paused(site), "nothing was executed"
        # Once the audit is writable again, the very same command runs (its nonce was given back)
        made.log.close()
        made.commands.audit = made.log = AuditLog(tmp_path / "writable.jsonl")
        assert made.commands.execute(command.SerializeToString()).outcome == pb.OUTCOME_EXECUTED
        outcomes = [e["outcome"] for e in _entries(tmp_path / "writable.jsonl")]
        assert outcomes == ["AUDIT_RESUMED", "DISPATCHED", "OUTCOME_EXECUTED"]
        resume = sign(new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_RESUME_QUEUE,
                                  target=pb.QueueRef(name="external_ai_queue"), ttl_s=60), made.key)
        assert made.commands.execute(resume.SerializeToString()).outcome == pb.OUTCOME_EXECUTED
    finally:
        made.close()


def test_over_grpc_an_unwritable_audit_is_unavailable_and_health_degraded(site: Site, tmp_path: Path) -> None:
    key, _ = keys.init(tmp_path / "keys")
    state = tmp_path / "state"
    state.mkdir()
    (state / "audit.jsonl").symlink_to("/dev/full")
    agent = AgentProcess(HOST, SITE, site.data_dir, state, keys.KeyFolder(tmp_path / "keys").bundle,
                         tmp_path / "agent.log", options=[*GENEROUS, "--interval", "0.2"])
    agent.start()
    try:
        with agent.client(timeout=10) as client:
            with pytest.raises(grpc.RpcError) as refused:
                client.execute("pause-queue", "external_ai_queue", key, HOST, SITE)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            details = refused.value.details() or ""
            assert "audit log cannot be written" in details and "/" not in details, details
            assert not _paused(site)
            def degraded_health() -> telemetry.HostHealth | None:
                health = client.get_health()
                return health if health.state == telemetry.HOST_STATE_DEGRADED else None

            degraded = wait_for(degraded_health, "health to say degraded", timeout=15)
            assert any("audit log cannot be written" in r for r in degraded.reasons), degraded.reasons
    finally:
        agent.close()
    assert os.path.islink(state / "audit.jsonl")


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--rejection-interval", "0", "--rejection-interval: value 0.0: expected 0.1 to 3600 seconds"),
    ("--audit-max-bytes", "100", "--audit-max-bytes: value 100: expected at least 65536"),
])
def test_the_audit_bounds_refuse_a_bad_value_naming_it(option: str, value: str, expected: str, tmp_path: Path) -> None:
    served = _cli("agent", "serve", "--host", HOST, "--site", SITE, "--data-dir", tmp_path / "site",
                  "--state-dir", tmp_path / "state", "--listen", "127.0.0.1:0", option, value)
    assert served.returncode == 2 and expected in served.stderr, served.stderr
    assert not (tmp_path / "state" / "audit.jsonl").exists(), "nothing written"
