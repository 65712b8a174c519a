"""The supervisor: real worker processes on a real site (scheduler + Redis as subprocesses)."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from ops_agent.health import HEALTHY, HealthMonitor, Thresholds
from ops_agent.supervisor import Supervisor, WorkerSpec, WorkerSpecError, parse_specs
from site_scheduler.testing import SITE, Site

HOST = "agent-host-1"
WAIT_S = 30


def _until(check: Callable[[], Any], what: str, timeout: float = WAIT_S, poll: Supervisor | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll.poll()
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie waiting for PID 1 to reap it does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stub(tmp_path: Path, name: str, body: str) -> str:
    """An executable standing in for the interpreter: the supervisor's argument list reaches it unchanged."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# -- specs --------------------------------------------------------------------------------------


def test_parse_specs() -> None:
    specs = parse_specs(" w1 = cpu_queue, media_queue ; w2=cpu_queue;")
    assert specs == [WorkerSpec("w1", ["cpu_queue", "media_queue"]), WorkerSpec("w2", ["cpu_queue"])]
    assert specs[0].queues == ("cpu_queue", "media_queue")


@pytest.mark.parametrize(("text", "message"), [
    ("", "worker specs '': expected NAME=QUEUE[,QUEUE...] separated by ';'"),
    ("w1", "worker spec 'w1' in 'w1': expected NAME=QUEUE[,QUEUE...]"),
    ("w1=cpu_queue;=media_queue", "worker spec '=media_queue' in 'w1=cpu_queue;=media_queue': expected NAME="),
    ("w1=cpu_queue,,media_queue", "worker spec 'w1=cpu_queue,,media_queue' in 'w1=cpu_queue,,media_queue': "
                                  "empty queue name"),
    ("w1=gpu_queue", "worker w1: queue 'gpu_queue': expected one of cpu_queue, local_ai_queue, media_queue, "
                     "external_ai_queue"),
    ("w1=cpu_queue;w1=media_queue", "worker 'w1' is named twice"),
    ("../w=cpu_queue", "worker name '../w': expected 1-128 letters"),
])
def test_parse_specs_names_the_bad_value(text: str, message: str) -> None:
    with pytest.raises(WorkerSpecError) as error:
        parse_specs(text)
    assert message in str(error.value)


# -- restarts, without a site --------------------------------------------------------------------


def test_a_crash_loop_backs_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    # Given a "worker" that exits at once
    supervisor = Supervisor(SITE, tmp_path, HOST, [WorkerSpec("w1", ["cpu_queue"])],
                            python=_stub(tmp_path, "crash", "exit 3"), log_dir=tmp_path / "logs",
                            backoff_initial=0.05, backoff_max=0.2)
    supervisor.start()
    delays: list[float | None] = []
    try:
        # When it is polled through five crashes
        while len(delays) < 5:
            _until(lambda: supervisor.status()[0].restart_in is not None, "the crash", poll=supervisor)
            state = supervisor.status()[0]
            assert not state.running and state.last_exit == 3 and state.restart_in <= state.restart_delay  # type: ignore[operator]
            delays.append(state.restart_delay)
            _until(lambda: supervisor.status()[0].restart_in is None, "the restart", poll=supervisor)
    finally:
        supervisor.stop(timeout=5)
    # Then each wait doubles up to the cap
    assert delays == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert supervisor.status()[0].restarts == 5


def test_a_worker_that_stayed_up_long_enough_restarts_after_the_first_delay(tmp_path: Path) -> None:
    supervisor = Supervisor(SITE, tmp_path, HOST, [WorkerSpec("w1", ["cpu_queue"])],
                            python=_stub(tmp_path, "short", "sleep 0.3; exit 1"), log_dir=tmp_path / "logs",
                            backoff_initial=0.05, backoff_max=5, stable_after=0.2)
    supervisor.start()
    try:
        for _ in range(3):
            _until(lambda: supervisor.status()[0].restart_in is not None, "the exit", poll=supervisor)
            assert supervisor.status()[0].restart_delay == 0.05
            _until(lambda: supervisor.status()[0].running, "the restart", poll=supervisor)
    finally:
        supervisor.stop(timeout=5)


def test_a_process_that_re_executes_itself_is_not_a_crash(tmp_path: Path) -> None:
    # Given a worker that replaces itself with a new program under the same pid, as a restart-worker does
    supervisor = Supervisor(SITE, tmp_path, HOST, [WorkerSpec("w1", ["cpu_queue"])],
                            python=_stub(tmp_path, "reexec", "exec sleep 30"), log_dir=tmp_path / "logs")
    supervisor.start()
    pid = supervisor.pids()["w1"]
    _until(lambda: psutil.Process(pid).name() == "sleep", "the exec")
    for _ in range(5):
        assert supervisor.poll() == []
        time.sleep(0.05)
    assert supervisor.pids() == {"w1": pid} and supervisor.status()[0].restarts == 0
    # And stop() ends it: SIGTERM, within the timeout
    supervisor.stop(timeout=5)
    assert not _alive(pid) and supervisor.pids() == {}


def test_stop_kills_a_worker_that_ignores_sigterm_with_its_children(tmp_path: Path) -> None:
    supervisor = Supervisor(SITE, tmp_path, HOST, [WorkerSpec("w1", ["cpu_queue"])],
                            python=_stub(tmp_path, "stubborn", "trap '' TERM; sleep 30 & wait; wait"),
                            log_dir=tmp_path / "logs")
    supervisor.start()
    pid = supervisor.pids()["w1"]
    children = _until(lambda: psutil.Process(pid).children(), "the child")
    supervisor.stop(timeout=0.5)  # how fast: `cinefleet bench agent`
    assert not _alive(pid)
    _until(lambda: not any(_alive(c.pid) for c in children), "the child to die", timeout=5)
    assert not (tmp_path / "logs" / "w1.pid").exists()


# -- a real site ---------------------------------------------------------------------------------


def _site_workers(site: Site) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in site.client.workers() if w["host"] == HOST and w["status"] != "offline"}


def test_supervised_workers_join_the_site_and_a_killed_one_is_restarted(site: Site, tmp_path: Path) -> None:
    # Given two supervised workers on a real site
    specs = parse_specs("aw1=cpu_queue,media_queue;aw2=cpu_queue")
    supervisor = Supervisor(SITE, site.data_dir, HOST, specs, log_dir=tmp_path / "logs", backoff_initial=0.5,
                            stop_timeout=20)
    supervisor.start()
    seen: set[int] = set()
    try:
        first = supervisor.pids()
        seen |= set(first.values())
        # Then the site hears both, with this host and the pids the supervisor started
        rows = _until(lambda: (r := _site_workers(site)) and r.keys() == {"aw1", "aw2"} and
                      {n: w["pid"] for n, w in r.items()} == first and r, "both workers at the site",
                      poll=supervisor)
        assert rows["aw1"]["queues"] == ["cpu_queue", "media_queue"] and rows["aw2"]["queues"] == ["cpu_queue"]
        assert (tmp_path / "logs" / "aw1.log").exists() and (tmp_path / "logs" / "aw1.pid").read_text() == \
            f"{first['aw1']}\n"

        # When aw1 is killed with SIGKILL
        os.kill(first["aw1"], signal.SIGKILL)
        _until(lambda: supervisor.status()[0].restart_in is not None, "the crash to be noticed", poll=supervisor)
        noticed = time.monotonic()
        crashed = supervisor.status()[0]
        assert (crashed.running, crashed.last_exit, crashed.restarts) == (False, -signal.SIGKILL, 0)
        assert crashed.restart_delay == 0.5 and 0 < crashed.restart_in <= 0.5  # type: ignore[operator]
        # Then it comes back under a new pid after the backoff, counted once; aw2 is untouched
        _until(lambda: "aw1" in supervisor.pids(), "the restart", poll=supervisor)
        assert time.monotonic() - noticed >= crashed.restart_in - 0.01  # type: ignore[operator]
        again = supervisor.pids()
        seen |= set(again.values())
        assert again["aw1"] != first["aw1"] and again["aw2"] == first["aw2"]
        assert [(p.name, p.restarts) for p in supervisor.status()] == [("aw1", 1), ("aw2", 0)]
        _until(lambda: _site_workers(site).get("aw1", {}).get("pid") == again["aw1"], "the new aw1 at the site",
               poll=supervisor)

        # And the health report shows them as supervised, with the restart
        monitor = HealthMonitor(HOST, SITE, site.data_dir, supervisor=supervisor, thresholds=Thresholds(
            load_per_cpu_degraded=1e6, memory_degraded=1.0, disk_high_water=1.0, temperature_degraded_c=1000))
        try:
            health = monitor.sample()  # its CPU cost: `cinefleet bench agent`
        finally:
            monitor.close()
        assert health.state == HEALTHY, list(health.reasons)
        assert [(w.name, w.supervised, w.restarts, w.pid) for w in health.workers] == [
            ("aw1", True, 1, again["aw1"]), ("aw2", True, 0, again["aw2"])]
        assert [q.name for q in health.queues] == ["cpu_queue", "local_ai_queue", "media_queue", "external_ai_queue"]
    finally:
        # When the supervisor stops, no worker process is left
        supervisor.stop()
    assert supervisor.pids() == {}
    assert [pid for pid in seen if _alive(pid)] == []
    assert not list((tmp_path / "logs").glob("*.pid"))
    _until(lambda: not _site_workers(site), "the site to see the workers go offline")


def test_a_new_supervisor_stops_the_orphans_of_the_last_one(site: Site, tmp_path: Path) -> None:
    # Given a supervisor that died without stopping its worker
    specs = [WorkerSpec("orphan1", ["cpu_queue"])]
    dead = Supervisor(SITE, site.data_dir, HOST, specs, log_dir=tmp_path / "logs")
    dead.start()
    orphan = dead.pids()["orphan1"]
    _until(lambda: "orphan1" in _site_workers(site), "the first worker at the site")
    # When the next one starts with the same log folder
    successor = Supervisor(SITE, site.data_dir, HOST, specs, log_dir=tmp_path / "logs", stop_timeout=20)
    try:
        successor.start()
        # Then the orphan is gone before its replacement starts: never two workers under one name
        assert not _alive(orphan)
        assert successor.pids()["orphan1"] != orphan
    finally:
        successor.stop()
        dead.stop(timeout=5)
