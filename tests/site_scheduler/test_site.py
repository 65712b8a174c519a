"""A real site: scheduler and workers as subprocesses over a real Redis, with operator controls."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pipeline.registry import DerivationRow
from pipeline.store import file_sha256
from site_scheduler import outbox
from site_scheduler.database import migrate, open_engine
from site_scheduler.tables import RunRow, StageRow, row_dict
from site_scheduler.testing import Site
from site_scheduler.worker import descendants
from tests.pipeline.conftest import require_espeak


def test_a_run_on_two_workers_is_byte_identical_to_cinefleet_render(
        site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    site.start_worker("w2")
    submitted = site.cli("submit", pilot, "--wait", "--json")
    run = json.loads(submitted.stdout)
    assert run["status"] == "completed", run
    episode = Path(run["episode"])
    assert file_sha256(episode) == pilot_reference_sha256
    stages = run["stages"]
    assert {s["status"] for s in stages} == {"done"}
    assert {s["worker"] for s in stages if s["kind"] == "shot"} == {"w1", "w2"}, "shots ran on both workers"
    assert {s["queue"] for s in stages} >= {"cpu_queue", "local_ai_queue", "media_queue"}

    queues = {q["queue"]: q for q in json.loads(site.cli("site", "queues", "--json").stdout)}
    cpu = queues["cpu_queue"]
    assert cpu["throughput_per_hour"] == sum(1 for s in stages if s["queue"] == "cpu_queue")
    assert cpu["waiting"] == cpu["depth"] == 0 and cpu["drain_eta_s"] == 0.0

    summary = json.loads((episode.parent / "run_summary.json").read_text())
    shots = [s for s in stages if s["kind"] == "shot"]
    assert summary["status"] == "completed" and summary["site_id"] == "t1" and summary["workers"] == 2
    assert summary["shots_rendered"] == len(shots) and summary["shots_reused"] == 0
    assert summary["output_hash"] == file_sha256(episode.parent / "RenderOutput.json")
    assert summary["total_seconds"] > 0 and len(summary["stages"]) == len(stages)

    again = json.loads(site.cli("submit", pilot, "--wait", "--json").stdout)
    assert file_sha256(Path(again["episode"])) == file_sha256(episode)
    media = [s for s in again["stages"] if s["kind"] in ("shot", "voice", "audio")]
    assert media and {s["worker"] for s in media} == {"cache"}, "a repeated run reuses every media artifact"
    reused = json.loads((Path(again["episode"]).parent / "run_summary.json").read_text())
    assert reused["shots_reused"] == len(shots) and reused["shots_rendered"] == 0
    assert reused["cache_hits"] >= len(media) and reused["cache_hit_rate"] > 0.5

    # Lose the mix from the registry: it is sent again, and its worker finds every AAC chunk
    # through the site's hints instead of encoding them again.
    audio = next(s for s in stages if s["kind"] == "audio")
    with Session(open_engine(site.client.endpoints.db_url)) as session, session.begin():
        session.execute(delete(DerivationRow).where(DerivationRow.key == audio["identity"]))
    third = json.loads(site.cli("submit", pilot, "--wait", "--json").stdout)
    assert file_sha256(Path(third["episode"])) == file_sha256(episode)
    mix = next(s for s in third["stages"] if s["kind"] == "audio")
    assert mix["worker"] in ("w1", "w2")
    timing = next(t for t in json.loads((Path(third["episode"]).parent / "run_summary.json").read_text())["stages"]
                  if t["stage"] == "audio")
    assert timing["cache_hits"] >= 2 and timing["cache_misses"] == 1, "every chunk reused, only the mix made"


def test_outbox_replay_rebuilds_runs_and_stages(site: Site, pilot: Path, tmp_path: Path) -> None:
    site.start_worker("w1")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait(run_id)
    lines = site.cli("site", "outbox", "--since", "0").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "gap-free, in commit order"
    assert all(e["site_id"] == "t1" for e in events)
    costs = [e["row"] for e in events if e["entity"] == "cost"]
    ran = [s for s in site.run(run_id)["stages"] if s["worker"] != "cache"]
    assert sorted((c["stage_id"], c["attempt"]) for c in costs) == sorted((s["stage_id"], s["attempts"]) for s in ran)
    assert all(c["origin"] == "local" and c["compute_seconds"] >= 0 and c["usd"] == 0.0 for c in costs)

    replica = open_engine(f"sqlite:///{tmp_path / 'replica.sqlite'}")
    migrate(replica)
    with Session(replica) as session, session.begin():
        outbox.replay(session, events)
    source = open_engine(site.client.endpoints.db_url)
    for table in (RunRow, StageRow):
        keys = [column.name for column in table.__table__.primary_key.columns]
        with Session(source) as a, Session(replica) as b:
            original = {tuple(row_dict(r)[k] for k in keys): row_dict(r) for r in a.scalars(select(table))}
            rebuilt = {tuple(row_dict(r)[k] for k in keys): row_dict(r) for r in b.scalars(select(table))}
        assert original.keys() == rebuilt.keys()
        differing = {key: (original[key], rebuilt[key]) for key in original if original[key] != rebuilt[key]}
        assert differing == {}
    tail = [json.loads(line)["seq"] for line in site.cli("site", "outbox", "--since", str(len(events) - 2)).stdout
            .splitlines()]
    # Worker heartbeats may have added events since the first read; the tail starts where asked.
    first = len(events) - 1
    assert tail[:2] == [first, first + 1] and tail == list(range(first, first + len(tail)))


def test_pause_holds_every_job_of_the_queue_and_resume_completes(site: Site, pilot: Path) -> None:
    site.start_worker("w1")
    site.cli("site", "pause-queue", "cpu_queue")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: site.stage(run_id, "script")["status"] == "done", "the script (local_ai_queue)")
    time.sleep(1.5)
    cpu = [s for s in site.run(run_id)["stages"] if s["queue"] == "cpu_queue"]
    assert cpu and all(s["status"] == "waiting" and s["attempts"] == 0 for s in cpu), cpu
    queues = {q["queue"]: q for q in json.loads(site.cli("site", "queues", "--json").stdout)}
    assert queues["cpu_queue"]["paused"] and not queues["media_queue"]["paused"]
    refused = site.cli("site", "pause-queue", "cpu_queue", check=False)
    assert refused.returncode == 4 and "already paused" in refused.stderr

    site.cli("site", "resume-queue", "cpu_queue")
    assert site.wait(run_id)["status"] == "completed"


def test_cancel_skips_queued_stages_kills_ffmpeg_and_publishes_nothing(site: Site, pilot: Path) -> None:
    site.start_worker("w1")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: any(s["kind"] == "shot" and s["status"] == "running" for s in site.run(run_id)["stages"]),
                    "a shot to start", timeout=90)
    worker_pid = site.workers["w1"].pid
    site.cli("site", "cancel-run", run_id)
    # How fast: `cinefleet bench site --parts cancel`
    site.wait_until(lambda: not _ffmpeg_children(worker_pid), "ffmpeg to be gone", timeout=30)
    run = site.run(run_id)
    assert run["status"] == "cancelled" and run["episode"] is None
    assert not any(s["status"] in ("queued", "waiting") for s in run["stages"])
    assert any(s["status"] == "skipped" for s in run["stages"])
    time.sleep(1.0)
    assert not (Path(site.client.endpoints.data_dir) / "out" / run_id / "episode.mp4").exists()
    assert site.cli("site", "cancel-run", run_id, check=False).returncode == 4


def _ffmpeg_children(pid: int) -> list[str]:

    names = []
    for child in descendants(pid):
        try:
            names.append(Path(f"/proc/{child}/comm").read_text().strip())
        except OSError:
            continue
    return [name for name in names if "ffmpeg" in name]


def test_retry_of_a_failed_stage_completes_the_run(
        site: Site, pilot: Path, tmp_path: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    from pipeline.media.ffmpeg import ffmpeg_path

    marker = tmp_path / "fail-next-encode"
    flaky = tmp_path / "ffmpeg"
    flaky.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" != "-version" ] && [ -e "{marker}" ]; then\n'
        f'  rm -f "{marker}"; echo injected failure >&2; exit 1\n'
        "fi\n"
        f'exec "{ffmpeg_path()}" "$@"\n'
    )
    flaky.chmod(0o755)
    marker.touch()
    site.start_worker("w1", env={"CINEFLEET_FFMPEG": str(flaky)})
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    run = site.wait(run_id)
    assert run["status"] == "failed", run
    failed = [s for s in run["stages"] if s["status"] == "failed"]
    assert len(failed) == 1 and "injected failure" in failed[0]["error"], json.dumps(run)
    identity = failed[0]["identity"]
    refused = site.cli("site", "retry-stage", run_id, "script", check=False)
    assert refused.returncode == 4 and "not failed" in refused.stderr

    site.cli("site", "retry-stage", run_id, failed[0]["stage_id"])
    run = site.wait(run_id)
    assert run["status"] == "completed"
    retried = site.stage(run_id, failed[0]["stage_id"])
    assert retried["identity"] == identity and retried["attempts"] == 2
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256


def _hanging_ffmpeg(tmp_path: Path) -> tuple[Path, Path]:
    """An ffmpeg whose first encode hangs (as a wedged encoder would); the rest run normally."""
    from pipeline.media.ffmpeg import ffmpeg_path

    marker = tmp_path / "hang-next-encode"
    wrapper = tmp_path / "ffmpeg-hangs-once"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" != "-version" ] && [ -e "{marker}" ]; then\n'
        f'  rm -f "{marker}"; exec sleep 120\n'
        "fi\n"
        f'exec "{ffmpeg_path()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    marker.touch()
    return wrapper, marker


def _hung_stage(site: Site, run_id: str, worker: str) -> dict[str, object]:
    return site.wait_until(lambda: next((s for s in site.run(run_id)["stages"]
                                         if s["status"] == "running" and s["worker"] == worker), None),
                           f"a stage to hang on {worker}", timeout=90)


def test_drain_deadline_requeues_the_job_in_flight_on_another_worker(
        site: Site, pilot: Path, tmp_path: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    wrapper, marker = _hanging_ffmpeg(tmp_path)
    site.start_worker("w1", env={"CINEFLEET_FFMPEG": str(wrapper)})
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: not marker.exists(), "the encode to hang", timeout=90)
    hung = _hung_stage(site, run_id, "w1")
    queue = str(hung["queue"])
    site.cli("site", "pause-queue", queue)  # the requeued stage waits: the killed attempt reports first
    site.cli("site", "drain-worker", "w1", "--deadline", "1")
    site.wait_until(lambda: _status(site, "w1") == "drained", "w1 to give up the wedged stage", timeout=15)
    assert not _sleeping_children(site.workers["w1"].pid), "the wedged encoder was killed"
    time.sleep(1.0)  # the killed attempt's "failed" result has been applied by now, or ignored
    waiting = site.stage(run_id, str(hung["stage_id"]))
    assert waiting["status"] == "waiting" and site.run(run_id)["status"] == "running", \
        "the superseded attempt's failure fails nothing"
    site.start_worker("w2")
    site.cli("site", "resume-queue", queue)
    run = site.wait(run_id)
    assert run["status"] == "completed", run
    stage = site.stage(run_id, str(hung["stage_id"]))
    assert stage["worker"] == "w2" and stage["attempts"] == 2
    assert "drain deadline passed" in stage["error"]
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256


def test_a_run_that_cannot_publish_fails_and_the_site_goes_on(site: Site, pilot: Path, tmp_path: Path) -> None:
    require_espeak()
    site.start_worker("w1")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    run_id = json.loads(site.cli("submit", pilot, "--out", blocked / "out", "--json").stdout)["run_id"]
    run = site.wait(run_id)
    assert run["status"] == "failed" and "publishing to" in run["detail"] and run["episode"] is None, run
    assert site.scheduler is not None and site.scheduler.poll() is None, "the scheduler is still up"
    assert site.wait(site.client.submit_probe(3), timeout=60)["status"] == "completed"


def test_restart_worker_gives_a_fresh_process_and_loses_nothing(
        site: Site, pilot: Path, tmp_path: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    wrapper, marker = _hanging_ffmpeg(tmp_path)
    site.start_worker("w1", env={"CINEFLEET_FFMPEG": str(wrapper)})
    before = site.wait_until(lambda: next((w for w in site.client.workers() if w["name"] == "w1"
                                           and w["started_at"]), None), "w1 to report")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: not marker.exists(), "the encode to hang", timeout=90)
    hung = _hung_stage(site, run_id, "w1")
    # The wedged encode holds the restart until its deadline: long enough for the second command's CLI to start
    said = site.cli("site", "restart-worker", "w1", "--deadline", "10")
    assert "restarting" in said.stdout
    again = site.cli("site", "restart-worker", "w1", check=False)
    assert again.returncode == 4 and "already restarting" in again.stderr
    run = site.wait(run_id)
    assert run["status"] == "completed", run
    after = next(w for w in site.client.workers() if w["name"] == "w1")
    assert after["pid"] == before["pid"] and after["started_at"] > before["started_at"], "a fresh process image"
    stage = site.stage(run_id, str(hung["stage_id"]))
    assert stage["attempts"] == 2 and stage["status"] == "done"
    site.wait_until(lambda: _status(site, "w1") == "idle", "w1 to take work again")
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256


def _sleeping_children(pid: int) -> list[int]:

    found = []
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "sleep":
                found.append(child)
        except OSError:
            continue
    return found


def test_drain_moves_work_to_the_other_worker_and_undrain_brings_it_back(site: Site, pilot: Path) -> None:
    site.start_worker("w1")
    site.start_worker("w2")
    site.cli("site", "drain-worker", "w1")
    # How fast: `cinefleet bench site --parts drain`
    site.wait_until(lambda: _status(site, "w1") == "drained", "w1 to report drained", timeout=60)
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    run = site.wait(run_id)
    assert run["status"] == "completed"
    assert {s["worker"] for s in run["stages"]} == {"w2"}, "the drained worker started nothing"
    site.cli("site", "undrain-worker", "w1")
    site.wait_until(lambda: _status(site, "w1") == "idle", "w1 to come back")
    refused = site.cli("site", "undrain-worker", "w1", check=False)
    assert refused.returncode == 4 and "not draining" in refused.stderr


def _status(site: Site, name: str) -> str:
    return next((w["status"] for w in site.client.workers() if w["name"] == name), "missing")


@pytest.fixture(scope="module")
def idle_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site that no test gives work or a worker: the refusals need no more, and one start serves them all."""
    root = tmp_path_factory.mktemp("idle-site")
    with Site(data_dir=root / "site", logs=root / "logs") as running:
        yield running


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("site", "pause-queue", "gpu_queue"), "queue 'gpu_queue' does not exist"),
        (("site", "cancel-run", "nope"), "run 'nope' does not exist"),
        (("site", "drain-worker", "ghost"), "worker 'ghost' does not exist"),
        (("site", "mark-host", "somewhere", "healthy"), "runs no worker of this site"),
        (("site", "restart-worker", "ghost"), "worker 'ghost' does not exist"),
        (("site", "drain-worker", "ghost", "--deadline", "-5"), "expected seconds between 0 and 604800"),
    ],
)
def test_controls_on_missing_things_are_refused(idle_site: Site, args: tuple[str, ...], fragment: str) -> None:
    result = idle_site.cli(*args, check=False)
    assert result.returncode == 4 and fragment in result.stderr


def test_submit_refuses_bad_input_before_sending(idle_site: Site, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    result = idle_site.cli("submit", bad, check=False)
    assert result.returncode == 2 and "malformed JSON" in result.stderr
    assert idle_site.client.runs() == []


def _first_running_shot(site: Site, run_id: str) -> dict[str, object] | None:
    return next((s for s in site.run(run_id)["stages"] if s["kind"] == "shot" and s["status"] == "running"), None)


def _shot_rows(site: Site) -> list[tuple[str, str]]:
    from pipeline.registry import ArtifactRow

    engine = open_engine(site.client.endpoints.db_url)
    with Session(engine) as session:
        rows = [(r.kind, r.hash) for r in session.scalars(select(ArtifactRow).where(ArtifactRow.kind == "ShotClip"))]
    engine.dispose()
    return rows


def test_a_worker_killed_mid_shot_loses_nothing(site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    site.start_worker("w2")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    shot = site.wait_until(lambda: _first_running_shot(site, run_id), "a shot to start", timeout=90)
    site.kill_worker(str(shot["worker"]))  # kill -9, with its ffmpeg
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256
    shots = [s for s in run["stages"] if s["kind"] == "shot"]
    rows = _shot_rows(site)
    assert len(rows) == len(set(rows)) == len(shots), "one registry row per shot clip, none twice"
    resent = site.stage(run_id, str(shot["stage_id"]))
    assert resent["attempts"] == 2
    # dramatiq redelivers the dead worker's message later; the surviving worker must skip it.
    from site_scheduler.messages import StagePayload
    from site_scheduler.worker import WorkerState

    keys, client = site.client.keys, site.client.redis
    attempts = client.hget(keys.attempts(run_id), str(shot["stage_id"]))
    assert attempts is not None and int(attempts) == 2
    state = WorkerState("probe", keys, client, ["cpu_queue"], "here")
    stale = StagePayload(run_id=run_id, stage_id=str(shot["stage_id"]), attempt=1, kind="shot", tenant_id="default")
    assert state.gate(stale, "cpu_queue") == "skip"
    assert state.gate(stale.model_copy(update={"attempt": 2}), "cpu_queue") is None


def test_restarting_the_scheduler_mid_run_completes_the_run(
        site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: _first_running_shot(site, run_id), "a shot to start", timeout=90)
    site.stop_scheduler(signal.SIGKILL)
    site.wait_until(lambda: site.client.redis.llen(site.client.keys.results), "the worker to report while the "
                    "scheduler is down", timeout=90)
    site.start_scheduler()
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256
    rows = _shot_rows(site)
    assert len(rows) == len(set(rows))


def test_restarting_redis_mid_run_completes_the_run(site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: _first_running_shot(site, run_id), "a shot to start", timeout=90)
    port = site.client.endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]
    redis_pid = next(
        int(p.name) for p in Path("/proc").iterdir()
        if p.name.isdigit() and _cmdline(p).startswith("/") and "redis-server" in _cmdline(p)
        and f":{port}" in _cmdline(p)
    )
    os.kill(redis_pid, signal.SIGKILL)
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_site_on_postgresql_renders_the_same_episode(
        tmp_path: Path, pilot: Path, pilot_reference_sha256: str) -> None:
    """The same site on a real PostgreSQL server (``--db-url``): migrations, outbox, registry."""
    require_espeak()
    from site_scheduler.testing import Site
    from tests.site_scheduler.postgres import postgres_cluster

    with postgres_cluster() as url:
        logs = tmp_path / "logs"
        logs.mkdir()
        pg_site = Site(data_dir=tmp_path / "pg-site", logs=logs, db_url=url)
        pg_site.start_scheduler()
        try:
            pg_site.start_worker("w1")
            run = json.loads(pg_site.cli("submit", pilot, "--wait", "--json").stdout)
            assert run["status"] == "completed", run
            assert file_sha256(Path(run["episode"])) == pilot_reference_sha256
            seqs = [json.loads(line)["seq"] for line in pg_site.cli("site", "outbox").stdout.splitlines()]
            assert seqs == list(range(1, len(seqs) + 1))
            assert pg_site.client.endpoints.db_url == url
        finally:
            pg_site.close()
