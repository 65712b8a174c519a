"""The hash-chained audit log: appends resume the chain; edits, deletions and reorders are found by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cinefleet.cli import app
from ops_agent import audit
from ops_agent.audit import AuditLog, AuditRecord
from ops_agent.envelope import new_payload, sign
from ops_agent.errors import AuditLogError, AuditUnavailable
from ops_agent.keys import SigningKey
from protos import ops_agent_pb2 as pb


def _write_log(path: Path, count: int) -> None:
    with AuditLog(path, clock=iter(float(n) for n in range(1000)).__next__) as log:
        for n in range(count):
            log.append(AuditRecord(command_id=f"c{n + 1}", action="ACTION_DRAIN_WORKER", target="worker:w1",
                                   outcome="OUTCOME_EXECUTED", message=f"done {n + 1}"))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_a_fresh_log_verifies_and_a_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 3)
    with AuditLog(path) as log:
        assert log.seq == 3
        entry = log.append(AuditRecord(command_id="c4", message="après redémarrage"))
    assert entry["seq"] == 4 and entry["prev_hash"] == json.loads(_lines(path)[2])["entry_hash"]
    report = audit.verify(path)
    assert report.ok and str(report) == "audit: 4 entries, chain intact"
    assert json.loads(_lines(path)[0])["prev_hash"] == audit.GENESIS_HASH


def test_an_edited_entry_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    lines[2] = lines[2].replace('"done 3"', '"done 33"')
    path.write_text("".join(lines))
    report = audit.verify(path)
    assert (report.line, report.seq) == (3, 3) and report.problem.startswith("edited")
    assert str(report) == f"audit: {path}: line 3 (seq 3): edited: entry_hash does not match the entry's content"


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    entry = json.loads(lines[2])
    entry["outcome"] = "OUTCOME_REFUSED"
    entry["entry_hash"] = audit.entry_hash(entry)
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    path.write_text("".join(lines))
    report = audit.verify(path)
    assert (report.line, report.seq) == (4, 4) and "prev_hash does not match" in report.problem


@pytest.mark.parametrize(("removed", "line", "seq", "missing"), [(2, 3, 4, "seq 3"), (0, 1, 2, "seq 1"),
                                                                 (1, 2, 4, "seq 2..3")])
def test_a_deleted_entry_is_found(removed: int, line: int, seq: int, missing: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    del lines[removed]
    if missing == "seq 2..3":
        del lines[removed]
    path.write_text("".join(lines))
    report = audit.verify(path)
    assert (report.line, report.seq) == (line, seq)
    assert report.problem == f"deleted: {missing} missing before this entry"


def test_a_reordered_entry_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 5)
    lines = _lines(path)
    lines[1], lines[3] = lines[3], lines[1]
    path.write_text("".join(lines))
    report = audit.verify(path)
    assert (report.line, report.seq) == (2, 4)
    assert report.problem == "reordered: expected seq 2 here, found at line 4"


def test_a_duplicated_entry_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 3)
    lines = _lines(path)
    path.write_text("".join([*lines, lines[1]]))
    report = audit.verify(path)
    assert (report.line, report.seq) == (4, 2) and report.problem.startswith("reordered or duplicated")


def test_a_torn_last_line_is_reported_and_stops_appends(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    with path.open("a") as handle:
        handle.write('{"seq": 3, "prev')
    report = audit.verify(path)
    assert report.line == 3 and "incomplete last line" in report.problem
    with pytest.raises(AuditLogError, match="last line is incomplete"):
        AuditLog(path)


def test_a_second_writer_is_refused_while_the_log_is_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path), pytest.raises(AuditLogError, match="open by another process"):
        AuditLog(path)
    AuditLog(path).close()


def test_a_command_outcome_is_recorded_with_hashes_and_names_only(tmp_path: Path) -> None:
    key = SigningKey.generate("cp-1")
    payload = new_payload(audience_host="host-a", site_id="site-1", action=pb.ACTION_RETRY_STAGE,
                          target=pb.StageRef(run_id="r1", stage_id="shot:s01"), actor="ana", actor_role="operator",
                          approved_by="bo")
    command = sign(payload, key)
    executed = pb.CommandResult(command_id=payload.command_id, host="host-a", outcome=pb.OUTCOME_EXECUTED,
                                message="stage retried")
    rejected = pb.CommandResult(host="host-a", outcome=pb.OUTCOME_REJECTED, reason=pb.REJECT_BAD_SIGNATURE,
                                message="signature: does not verify")
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        ran = log.append(AuditRecord.for_result(command, executed, payload))
        refused = log.append(AuditRecord.for_result(command, rejected))
    assert ran["action"] == "ACTION_RETRY_STAGE" and ran["target"] == "stage:r1/shot:s01"
    assert (ran["actor"], ran["actor_role"], ran["approved_by"], ran["site"]) == ("ana", "operator", "bo", "site-1")
    assert ran["outcome"] == "OUTCOME_EXECUTED" and ran["reason"] == "" and ran["key_id"] == "cp-1"
    assert refused["reason"] == "REJECT_BAD_SIGNATURE" and refused["actor"] == "" and refused["action"] == ""
    assert ran["payload_sha256"] == refused["payload_sha256"] and len(ran["payload_sha256"]) == 64
    text = path.read_text()
    assert command.signature.hex() not in text and payload.nonce.hex() not in text
    assert audit.verify(path).ok


def test_audit_verify_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    root = app
    path = tmp_path / "audit.jsonl"
    _write_log(path, 4)
    intact = runner.invoke(root, ["audit", "verify", str(path)])
    assert intact.exit_code == 0 and intact.output.strip() == "audit: 4 entries, chain intact"
    lines = _lines(path)
    path.write_text("".join(lines[:1] + lines[2:]))
    broken = runner.invoke(root, ["audit", "verify", str(path)])
    assert broken.exit_code == 1
    assert "line 2 (seq 3): deleted: seq 2 missing" in broken.output
    missing = runner.invoke(root, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "cannot read audit log" in missing.output
    # --json: the report as one object on stdout, intact or not; the exit code still says which
    as_json = runner.invoke(root, ["audit", "verify", "--json", str(path)])
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report == {"file": str(path), "files": 1, "entries": 3, "ok": False, "line": 2, "seq": 3,
                      "problem": "deleted: seq 2 missing before this entry"}


def test_a_write_torn_by_a_full_disk_leaves_the_chain_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    real_write = audit.os.write

    def disk_full(fd: int, data: bytes) -> int:  # half the line lands, then the disk is full
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    with AuditLog(path) as log:
        log.append(AuditRecord(command_id="c1", message="before"))
        monkeypatch.setattr(audit.os, "write", disk_full)
        with pytest.raises(AuditUnavailable, match="No space left"):
            log.append(AuditRecord(command_id="c2", message="torn"))
        assert log.problem == "audit log cannot be written: No space left on device"
        monkeypatch.setattr(audit.os, "write", real_write)
        log.append(AuditRecord(command_id="c3", message="after"))
        assert log.problem is None
    report = audit.verify(path)
    assert report.ok and report.entries == 2, report
    assert [json.loads(line)["command_id"] for line in _lines(path)] == ["c1", "c3"]
