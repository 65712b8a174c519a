"""Faults an operator's bad night brings (issue 9), on a real site: each must be ridden out, never hang a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from pipeline.store import file_sha256
from site_scheduler.testing import Site
from site_scheduler.worker import HEARTBEAT_SECONDS, descendants
from tests.pipeline.conftest import require_espeak

#: The site's Redis socket timeout in the stall tests (``site serve --redis-timeout``; 5 s by default):
#: short, so that a stall past it lasts seconds, not tens of seconds.
REDIS_TIMEOUT_S = 2
#: Longer than the socket timeout: every client sees ``TimeoutError``, not ``ConnectionError``.
STALL_S = REDIS_TIMEOUT_S + 2
#: A heartbeat TTL (``site serve --heartbeat-ttl``; 10 s by default) the stall stays well inside, as 7 s
#: inside 10 s with the defaults: no worker may give up its job for it.
OUTLASTS_STALL_TTL_S = 8
#: A heartbeat TTL short enough that a stall can outlast it in a few seconds.
SHORT_TTL_S = 3


@contextmanager
def _site_with(tmp_path: Path, heartbeat_ttl: float) -> Iterator[Site]:
    """A site whose Redis timeout is :data:`REDIS_TIMEOUT_S` and whose heartbeat TTL is ``heartbeat_ttl``."""
    options = ["--redis-timeout", str(REDIS_TIMEOUT_S), "--heartbeat-ttl", str(heartbeat_ttl)]
    with Site(data_dir=tmp_path / "site", logs=tmp_path / "logs", options=options) as running:
        endpoints = running.client.endpoints  # what every worker of the site reads from site.json
        assert (endpoints.redis_timeout_s, endpoints.heartbeat_ttl_s) == (REDIS_TIMEOUT_S, heartbeat_ttl)
        yield running


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--heartbeat-ttl", "1", "--heartbeat-ttl: value 1.0: expected seconds between 2 and 3600"),
    ("--redis-timeout", "0", "--redis-timeout: value 0.0: expected seconds between 0.5 and 60"),
])
def test_site_timings_out_of_range_are_refused_and_nothing_is_written(
        tmp_path: Path, option: str, value: str, expected: str) -> None:
    data_dir = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "cinefleet", "site", "serve", "--site", "t1", "--data-dir",
                             str(data_dir), option, value], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert not data_dir.exists()


def _running_shot(site: Site, run_id: str) -> dict[str, object] | None:
    return next((s for s in site.run(run_id)["stages"] if s["kind"] == "shot" and s["status"] == "running"), None)


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The process frozen (SIGSTOP) for the block; always thawed again."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _online(site: Site, names: set[str]) -> bool:
    return {w["name"] for w in site.client.workers() if w["status"] != "offline"} >= names


def test_a_redis_stall_past_the_socket_timeout_is_ridden_out(
        tmp_path: Path, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    with _site_with(tmp_path, OUTLASTS_STALL_TTL_S) as site:
        _ride_out_a_redis_stall(site, pilot, pilot_reference_sha256)


def _ride_out_a_redis_stall(site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    site.start_worker("w1")
    site.start_worker("w2")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: _running_shot(site, run_id), "a shot to start", timeout=90)
    with _stopped(site.redis_pid()):
        time.sleep(STALL_S)
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256
    assert site.scheduler is not None and site.scheduler.poll() is None, "the scheduler never exited"
    for name, process in site.workers.items():
        assert process.poll() is None, f"worker {name} exited"
    # Heartbeats flow again: both workers are online, and stay so past the heartbeat TTL.
    site.wait_until(lambda: _online(site, {"w1", "w2"}), "both workers online", timeout=30)
    time.sleep(OUTLASTS_STALL_TTL_S + 1)
    assert _online(site, {"w1", "w2"}), site.client.workers()
    health = site.client.redis.hgetall(site.client.keys.scheduler)
    assert health[b"status"] == b"ok", health


def _sqlite_path(site: Site) -> str:
    url = site.client.endpoints.db_url
    assert url.startswith("sqlite:///"), url
    return url.removeprefix("sqlite:///")


def test_a_database_write_lock_held_for_seconds_drops_no_result(
        site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    site.start_worker("w2")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: _running_shot(site, run_id), "a shot to start", timeout=90)
    # Another process writes and holds the write lock for 3 s, three times, while shots finish:
    # the scheduler's transactions meet "database is locked" and must keep what they carried.
    other = sqlite3.connect(_sqlite_path(site), timeout=60, isolation_level=None)
    try:
        other.execute("CREATE TABLE IF NOT EXISTS lock_probe (n INTEGER)")
        for n in range(3):
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO lock_probe VALUES (?)", (n,))
            time.sleep(3)
            other.execute("COMMIT")
            time.sleep(0.1)
    finally:
        other.close()
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256
    assert site.scheduler is not None and site.scheduler.poll() is None, "the scheduler never exited"
    health = site.client.redis.hgetall(site.client.keys.scheduler)
    assert health[b"status"] == b"ok", health


def test_a_stage_left_running_on_an_idle_worker_can_be_retried(
        site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    first = site.wait(run_id, timeout=240)
    assert first["status"] == "completed"
    # Each queue's completion counter reached the outbox as the workers finished its stages.
    ran = Counter(s["queue"] for s in first["stages"] if s["worker"] != "cache")
    counted = {e["row"]["name"]: e["row"]["completed"] for e in site.client.outbox(0) if e["entity"] == "queue"}
    assert {queue: counted.get(queue) for queue in ran} == dict(ran), counted
    shot = next(s for s in first["stages"] if s["kind"] == "shot")
    # What a dropped result used to leave: the stage running on a worker that is idle.
    db = sqlite3.connect(_sqlite_path(site), timeout=60, isolation_level=None)
    try:
        db.execute("UPDATE stages SET status = 'running', worker = 'w1' WHERE run_id = ? AND stage_id = ?",
                   (run_id, shot["stage_id"]))
        db.execute("UPDATE runs SET status = 'running', finished_at = NULL WHERE run_id = ?", (run_id,))
    finally:
        db.close()
    refused = site.cli("site", "retry-stage", run_id, "script", check=False)
    assert refused.returncode == 4 and "not failed" in refused.stderr
    site.cli("site", "retry-stage", run_id, str(shot["stage_id"]))
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert site.stage(run_id, str(shot["stage_id"]))["status"] == "done"
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256


def test_a_worker_name_live_on_another_host_is_refused(site: Site) -> None:
    site.start_worker("w1")
    taken = site.cli("worker", "--name", "w1", "--host", "elsewhere", check=False)
    assert taken.returncode != 0
    assert "'w1'" in taken.stderr and "already reports that name" in taken.stderr, taken.stderr
    [w1] = [w for w in site.client.workers() if w["name"] == "w1"]
    assert w1["host"] != "elsewhere" and w1["status"] != "offline"
    # The refused process changed nothing; another name is accepted.
    site.start_worker("w2")
    assert {w["name"] for w in site.client.workers()} >= {"w1", "w2"}


@contextmanager
def _small_volume(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block (needs the right to mount; skipped without it)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small volume here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_is_named_and_a_retry_after_freeing_space_gives_the_same_bytes(tmp_path: Path) -> None:
    from pipeline.errors import MediaError
    from pipeline.media.ffmpeg import media_url, run_ffmpeg

    encode = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-c:v", "libx264",
              "-preset", "ultrafast", "-threads", "1", "-f", "mp4"]
    reference = tmp_path / "reference.mp4"
    run_ffmpeg([*encode, media_url(reference)], "encode the reference")
    with _small_volume(tmp_path / "volume", "1m") as volume:
        filler = volume / "filler"
        with filler.open("wb") as out, pytest.raises(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        with pytest.raises(MediaError) as full:
            run_ffmpeg([*encode, media_url(volume / "clip.mp4")], "encode a clip")
        assert f"No space left on device on {volume}" in str(full.value), str(full.value)
        filler.unlink()
        run_ffmpeg([*encode, media_url(volume / "clip.mp4")], "encode a clip")
        assert file_sha256(volume / "clip.mp4") == file_sha256(reference)


def test_mix_chunk_hints_are_only_hints_when_redis_stalls(site: Site) -> None:
    from site_scheduler.execute import RedisHints

    client = redis.Redis.from_url(site.client.endpoints.redis_url, socket_timeout=1)
    hints = RedisHints(client, site.client.keys)
    stage = RedisHints.STAGES[0]
    with _stopped(site.redis_pid()):
        assert hints.get("default", stage, "chunk-key") is None  # a stall is a miss, not an error
        hints.put("default", stage, "chunk-key", "artifact")  # lost, not raised
    hints.put("default", stage, "chunk-key", "artifact")
    assert hints.get("default", stage, "chunk-key") == "artifact"
    client.close()


def test_drains_host_marks_and_pauses_come_back_after_redis_loses_its_data(site: Site) -> None:
    site.start_worker("w1")
    site.start_worker("w2")
    host = next(w["host"] for w in site.client.workers() if w["name"] == "w2")
    site.cli("site", "drain-worker", "w1")
    site.cli("site", "pause-queue", "media_queue")
    site.cli("site", "mark-host", host, "degraded")
    keys, client = site.client.keys, site.client.redis
    assert client.exists(keys.drain("w1")) and client.exists(keys.paused("media_queue"))
    # Redis dies and comes back without its data (its append-only files are gone).
    for persisted in (site.data_dir / "redis").glob("appendonly*"):  # a file (Redis 6) or a folder (7)
        shutil.rmtree(persisted) if persisted.is_dir() else persisted.unlink()
    os.kill(site.redis_pid(), signal.SIGKILL)

    def restored() -> bool:
        try:
            return bool(client.exists(keys.drain("w1")) and client.exists(keys.paused("media_queue"))
                        and client.get(keys.host_state(host)) == b"degraded")
        except redis.exceptions.RedisError:
            return False  # not back yet

    site.wait_until(restored, "the drain, the pause and the host mark back in Redis", timeout=30)
    time.sleep(2)  # several heartbeat syncs: none may undo the drain
    [w1] = [w for w in site.client.workers() if w["name"] == "w1"]
    assert w1["status"] in ("draining", "drained"), w1


def test_cinefleet_render_on_a_full_disk_says_so_and_a_retry_after_freeing_space_matches(
        pilot: Path, tmp_path: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    out = tmp_path / "out"
    with _small_volume(tmp_path / "volume", "1m") as volume:
        store = volume / "store"
        command = [sys.executable, "-m", "cinefleet", "render", str(pilot), "--out", str(out), "--store", str(store)]
        full = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert full.returncode == 1, full.stderr
        assert f"No space left on device on {volume}" in full.stderr and "Traceback" not in full.stderr, full.stderr
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["status"] == "failed" and "No space left on device" in summary["errors"][0]["message"]
        subprocess.run(["mount", "-o", "remount,size=512m", str(volume)], check=True)  # space freed
        again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert again.returncode == 0, again.stderr
    assert file_sha256(out / "episode.mp4") == pilot_reference_sha256



def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_worker_unseen_past_its_heartbeat_ttl_abandons_its_job_and_comes_back(
        pilot: Path, tmp_path: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    with _site_with(tmp_path, SHORT_TTL_S) as site:
        _abandon_and_come_back(site, pilot, tmp_path, pilot_reference_sha256)


def _abandon_and_come_back(site: Site, pilot: Path, tmp_path: Path, pilot_reference_sha256: str) -> None:
    from pipeline.media.ffmpeg import ffmpeg_path

    marker = tmp_path / "hang-next-encode"
    slow = tmp_path / "ffmpeg"
    slow.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" != "-version" ] && [ -e "{marker}" ]; then rm -f "{marker}"; sleep 60; fi\n'
        f'exec "{ffmpeg_path()}" "$@"\n'
    )
    slow.chmod(0o755)
    marker.touch()
    site.start_worker("w1", env={"CINEFLEET_FFMPEG": str(slow)})
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    worker = site.workers["w1"]
    hung = site.wait_until(lambda: next((p for p in descendants(worker.pid) if _comm(p) == "sleep"), None),
                           "an encode to hang", timeout=120)
    stalled = time.monotonic()
    with _stopped(site.redis_pid()):
        # Past the heartbeat TTL the worker must give its job up: it notices at its first beat that fails
        # after the TTL, each failing beat taking up to the socket timeout.
        site.wait_until(lambda: not Path(f"/proc/{hung}").exists() or _comm(hung) != "sleep",
                        "the hung encode to be killed", timeout=SHORT_TTL_S + 2 * REDIS_TIMEOUT_S + 10)
        # Its last heartbeat may have reached Redis up to one beat before the stall began.
        assert time.monotonic() - stalled > SHORT_TTL_S - HEARTBEAT_SECONDS, "given up only once the TTL had passed"
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == pilot_reference_sha256
    assert "abandoning" in (site.logs / "w1.log").read_text()
    site.wait_until(lambda: _online(site, {"w1"}), "w1 back online", timeout=30)
    assert worker.poll() is None


def test_identical_runs_submitted_together_render_each_shot_once(
        site: Site, pilot: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    site.start_worker("w1")
    site.start_worker("w2")
    run_ids = [site.client.submit(pilot) for _ in range(2)]
    runs = [site.wait(run_id, timeout=300) for run_id in run_ids]
    assert [run["status"] for run in runs] == ["completed", "completed"], runs
    episodes = {file_sha256(Path(run["episode"])) for run in runs}
    assert episodes == {pilot_reference_sha256}
    shots = [s for run in runs for s in run["stages"] if s["kind"] == "shot"]
    rendered = Counter(s["identity"] for s in shots if s["worker"] != "cache")
    assert rendered and set(rendered.values()) == {1}, rendered
    assert set(rendered) == {s["identity"] for s in shots}, "each shot rendered by one run, reused by the other"
