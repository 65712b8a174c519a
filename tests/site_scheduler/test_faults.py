"""Faults an operator's bad night brings (issue 9), on a real site: each must be ridden out, never hang a run."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.render import RenderRequest, render
from pipeline.store import file_sha256
from tests.pipeline.conftest import require_espeak
from tests.site_scheduler.conftest import Site

#: Longer than redis-py's 5 s socket timeout: every client sees ``TimeoutError``, not ``ConnectionError``.
STALL_S = 7


def _render_hash(project: Path, tmp_path: Path) -> str:
    result = render(RenderRequest(project=project, out=tmp_path / "render-out", store=tmp_path / "render-store"))
    assert result.output is not None
    return result.output.video.sha256


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


def test_a_redis_stall_past_the_socket_timeout_is_ridden_out(site: Site, pilot: Path, tmp_path: Path) -> None:
    require_espeak()
    site.start_worker("w1")
    site.start_worker("w2")
    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    site.wait_until(lambda: _running_shot(site, run_id), "a shot to start", timeout=90)
    with _stopped(site.redis_pid()):
        time.sleep(STALL_S)
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    assert file_sha256(Path(run["episode"])) == _render_hash(pilot, tmp_path)
    assert site.scheduler is not None and site.scheduler.poll() is None, "the scheduler never exited"
    for name, process in site.workers.items():
        assert process.poll() is None, f"worker {name} exited"
    # Heartbeats flow again: both workers are online, and stay so past the heartbeat TTL.
    site.wait_until(lambda: _online(site, {"w1", "w2"}), "both workers online", timeout=30)
    time.sleep(11)
    assert _online(site, {"w1", "w2"}), site.client.workers()
    health = site.client.redis.hgetall(site.client.keys.scheduler)
    assert health[b"status"] == b"ok", health
