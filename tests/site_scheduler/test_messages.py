"""The site's Redis messages are validated when read; the client's failures are all SiteErrors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pipeline.testing import wait_for
from site_scheduler.client import SiteClient
from site_scheduler.config import SiteEndpoints, sqlite_url_for
from site_scheduler.errors import SiteError, SiteUnreachable, SubmissionRefused
from site_scheduler.messages import Control, StageResult, Submission
from site_scheduler.status import FINAL_RUN, RunStatus
from site_scheduler.testing import Site


def test_malformed_messages_are_dropped_and_the_scheduler_goes_on(site: Site) -> None:
    site.start_worker("w1")
    keys, client = site.client.keys, site.client.redis
    malformed: dict[str, list[bytes | str]] = {
        keys.submissions: [b"{ not json", json.dumps({"run_id": "r-bad", "stages": []}),
                           json.dumps({"run_id": "r-kind", "tenant_id": "default", "out": "/tmp/x",
                                       "stages": [{"stage_id": "a", "kind": "no-such-kind"}]})],
        keys.results: [b"[1, 2]", json.dumps({"run_id": "r", "stage_id": "s", "attempt": "many", "status": "done"})],
        keys.controls: [json.dumps({"action": "pause-queue"}), b"\xff\xfe"],
    }
    for source, items in malformed.items():
        client.rpush(source, *items)
    client.hset(keys.worker("ghost"), mapping={"name": "ghost", "pid": "not a number"})
    client.sadd(keys.workers, "ghost")
    run_id = site.client.submit_probe(5)
    run = site.wait(run_id, timeout=60)
    assert run["status"] == "completed" and len(run["stages"]) == 5
    assert site.scheduler is not None and site.scheduler.poll() is None, "the scheduler is still running"
    assert site.client.run("r-bad") is None and site.client.run("r-kind") is None
    for source in malformed:
        assert client.llen(keys.processing(source)) == 0, f"{source}: every item was taken and dropped"
    # Heartbeats are read twice a second, apart from the run: wait for the scheduler's next look.
    def read_log() -> str | None:
        text = (site.logs / "scheduler.log").read_text()
        return text if "dropped a malformed heartbeat" in text else None

    log = wait_for(read_log, "the malformed heartbeat to be read and dropped", timeout=30)
    assert "dropped a malformed Submission" in log and "stages.0.kind" in log
    assert "dropped a malformed StageResult" in log and "dropped a malformed Control" in log
    assert "dropped a malformed heartbeat" in log and "ghost" not in {w["name"] for w in site.client.workers()}
    assert site.client.control("pause-queue", queue="media_queue") == "queue media_queue paused"


def test_a_probe_run_completes_by_the_same_rule_and_names_its_run(site: Site) -> None:
    site.start_worker("w1")
    run_id = site.client.submit_probe(3)
    run = site.wait(run_id, timeout=60)
    assert run["status"] == RunStatus.COMPLETED and {s["status"] for s in run["stages"]} == {"done"}
    summary = json.loads((Path(site.client.endpoints.data_dir) / "out" / run_id / "run_summary.json").read_text())
    assert summary["run_id"] == run_id and summary["status"] == "completed" and summary["output_hash"] is None


def test_messages_refuse_what_is_missing_and_ignore_what_is_new() -> None:
    result = StageResult.model_validate_json(json.dumps({"run_id": "r", "stage_id": "s", "attempt": 1,
                                                         "status": "done", "from_the_future": 1}))
    assert result.outputs == {} and result.seconds is None
    with pytest.raises(ValueError, match="status"):
        StageResult.model_validate({"run_id": "r", "stage_id": "s", "attempt": 1, "status": "exploded"})
    with pytest.raises(ValueError, match="stages"):
        Submission.model_validate({"run_id": "r", "tenant_id": "t", "out": "/o", "stages": []})
    assert Control.model_validate({"id": "1", "action": "pause-queue"}).expires == float("inf")
    assert {status.final for status in RunStatus} == {True, False}
    assert {RunStatus(s) for s in ("completed", "failed", "blocked", "cancelled")} == FINAL_RUN


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_client_raises_only_site_errors(tmp_path: Path) -> None:
    endpoints = SiteEndpoints(site_id="gone", data_dir=str(tmp_path), redis_url=f"redis://127.0.0.1:{_closed_port()}",
                              db_url=sqlite_url_for(tmp_path / "missing-folder"), store=str(tmp_path / "store"),
                              scheduler_pid=0)
    client = SiteClient(endpoints)
    with pytest.raises(SiteUnreachable, match="database"):
        client.runs()
    with pytest.raises(SiteUnreachable, match="Redis"):
        client.control("pause-queue", queue="cpu_queue")
    with pytest.raises(SiteUnreachable, match="Redis"):
        client.submit_probe(1)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(SubmissionRefused, match="malformed JSON") as refused:
        client.submit(bad)
    assert isinstance(refused.value, SiteError)
    client.close()


def test_every_stage_kind_runs_on_a_site_queue() -> None:
    from pipeline.kinds import KINDS
    from site_scheduler.keys import QUEUES

    assert {kind.queue for kind in KINDS.values()} <= set(QUEUES)
