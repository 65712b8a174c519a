"""Host health: a real psutil sample, thresholds, and the state machine fed with sequences."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ops_agent.health import (
    DEGRADED,
    HEALTHY,
    OFFLINE,
    HealthMonitor,
    HostStateMachine,
    InvalidThresholds,
    Thresholds,
    queue_stats,
    sample_host,
    worker_findings,
    worker_statuses,
)

BAD = ["disk / 95% ≥ 90%"]


def _feed(machine: HostStateMachine, samples: str) -> str:
    """Feed ``g`` (good), ``b`` (breach) and ``u`` (site unreachable) samples; return the states as letters."""
    letters = {HEALTHY: "H", DEGRADED: "D", OFFLINE: "O"}
    out = []
    for sample in samples:
        state = machine.observe(BAD if sample == "b" else [], reachable=sample != "u")
        out.append(letters[state])
    return "".join(out)


def test_a_real_sample_has_sane_figures(tmp_path: Path) -> None:
    # Given generous thresholds, When this machine is sampled
    before = time.time()
    health = sample_host("h1", "s1", [tmp_path, Path("/"), tmp_path], Thresholds(load_per_cpu_degraded=1e6))
    # Then every figure is plausible
    assert health.host == "h1" and health.site_id == "s1"
    assert before <= health.sampled_at <= time.time()
    assert health.cpu_count == (os.cpu_count() or 1)
    assert health.load_1m >= 0 and health.load_5m >= 0
    assert 0 < health.memory_used_bytes < health.memory_total_bytes
    assert [d.mount for d in health.disks] == [str(tmp_path), "/"], "one entry per volume, duplicates dropped"
    for disk in health.disks:
        assert 0 < disk.used_bytes <= disk.total_bytes and disk.high_water == 0.9
    for reading in health.temperatures:
        assert -50 < reading.celsius < 150 and reading.sensor
    assert health.state == 0, "a raw sample is not judged"


def test_breaches_give_one_reason_line_each(tmp_path: Path) -> None:
    strict = Thresholds(memory_degraded=1e-9, disk_high_water=1e-9, load_per_cpu_degraded=1e-9,
                        temperature_degraded_c=-273)
    health = sample_host("h1", "s1", [Path("/"), tmp_path / "missing"], strict)
    reasons = list(health.reasons)
    assert any(r.startswith("memory ") and r.endswith("used ≥ 0%") for r in reasons), reasons
    assert any(r.startswith("disk / ") and "% ≥ 0%" in r for r in reasons), reasons
    assert f"disk {tmp_path / 'missing'}: cannot read (No such file or directory)" in reasons
    assert health.disks[0].over_high_water
    assert len([r for r in reasons if r.startswith("temperature")]) == len(health.temperatures)
    if health.load_1m > 0:
        assert any(r.startswith("load 1m ") and "per cpu ≥ 1e-09" in r for r in reasons), reasons


def test_one_bad_sample_does_not_degrade_but_degrade_after_do() -> None:
    machine = HostStateMachine(Thresholds(degrade_after=3, recover_after=5))
    assert _feed(machine, "gbgbbgg") == "HHHHHHH", "isolated and paired breaches never add up to three"
    assert _feed(machine, "bbb") == "HHD"
    assert machine.pending() is None


def test_recovery_needs_recover_after_good_samples_in_a_row() -> None:
    machine = HostStateMachine(Thresholds(degrade_after=3, recover_after=5))
    assert _feed(machine, "bbb") == "HHD"
    assert _feed(machine, "ggggbgggg") == "DDDDDDDDD", "a breach restarts the count"
    assert machine.pending() == "recovering: 4 of 5 good samples"
    assert _feed(machine, "g") == "H"


def test_unreachable_degrades_then_goes_offline_and_recovers() -> None:
    machine = HostStateMachine(Thresholds(degrade_after=3, recover_after=5, offline_after=10))
    assert _feed(machine, "uu") == "HH"
    assert machine.pending() == "2 of 3 bad samples before degraded"
    assert _feed(machine, "u" * 8) == "DDDDDDDO"
    # Back, but with a breach among the first reachable samples: degraded, not healthy, once reachable long enough
    assert _feed(machine, "gbggg") == "OOOOD"
    assert _feed(machine, "ggggg") == "DHHHH", "five good in a row counting the three before"


def test_a_clean_return_from_offline_is_healthy() -> None:
    machine = HostStateMachine(Thresholds(degrade_after=3, recover_after=2, offline_after=2))
    assert _feed(machine, "uuugg") == "HOOOH"
    assert _feed(machine, "ugug") == "HHHH", "one unreachable sample between good ones changes nothing"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"memory_degraded": 1.5}, "thresholds.memory_degraded: value 1.5: expected a fraction above 0 and at most 1"),
    ({"degrade_after": 0}, "thresholds.degrade_after: value 0: expected a whole number of samples ≥ 1"),
    ({"recover_after": 2.5}, "thresholds.recover_after: value 2.5"),
    ({"load_per_cpu_degraded": "high"}, "thresholds.load_per_cpu_degraded: value 'high': expected a number"),
])
def test_thresholds_name_the_bad_value(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidThresholds) as error:
        Thresholds(**overrides)  # type: ignore[arg-type]
    assert str(error.value).startswith(message)


def test_site_rows_become_this_hosts_worker_statuses() -> None:
    rows = [
        {"name": "w1", "site_id": "s1", "host": "h1", "pid": 11, "status": "active", "queues": ["cpu_queue"],
         "current_job": "run/shot-1", "since": 5.0},
        {"name": "w9", "site_id": "s1", "host": "other", "pid": 99, "status": "idle", "queues": ["cpu_queue"],
         "current_job": None, "since": 1.0},
        {"name": "w0", "site_id": "s1", "host": "h1", "pid": 10, "status": "idle", "queues": ["media_queue"],
         "current_job": None, "since": 2.0},
    ]
    workers = worker_statuses(rows, "h1", "s1", restarts={"w1": 2, "w2": 0})
    assert [w.name for w in workers] == ["w0", "w1", "w2"], "other hosts dropped, sorted"
    w0, w1, w2 = workers
    assert (w0.supervised, w0.current_job, list(w0.queues)) == (False, "", ["media_queue"])
    assert (w1.pid, w1.status, w1.current_job, w1.supervised, w1.restarts) == (11, "active", "run/shot-1", True, 2)
    assert (w2.status, w2.pid, w2.supervised) == ("offline", 0, True), "supervised but unheard of"

    breaches, offline = worker_findings(workers)
    assert breaches == ["worker w2: supervised but no heartbeat at the site"] and offline is None
    assert worker_findings(workers, starting=["w2"]) == ([], None)
    dead = worker_statuses([], "h1", "s1", restarts={"w1": 0, "w2": 0})
    assert worker_findings(dead) == ([], "no heartbeat from any supervised worker (w1, w2)")
    assert worker_findings(worker_statuses(rows, "h1", "s1")) == ([], None), "no supervised worker, no judgement"


def test_site_queue_rows_become_queue_stats() -> None:
    rows = [
        {"queue": "cpu_queue", "paused": True, "waiting": 7, "depth": 3, "in_flight": 1, "delayed": 2, "dead": 0,
         "completed": 40, "throughput_per_hour": 12, "drain_eta_s": 330.0},
        {"queue": "media_queue", "paused": False, "waiting": 0, "depth": 1, "in_flight": 0, "delayed": 0,
         "dead": 4, "completed": 0, "throughput_per_hour": 0, "drain_eta_s": None},
    ]
    cpu, media = queue_stats(rows, "s1")
    assert (cpu.name, cpu.site_id, cpu.paused, cpu.depth, cpu.in_flight, cpu.delayed) == (
        "cpu_queue", "s1", True, 10, 1, 2)
    assert (cpu.throughput_per_hour, cpu.drain_eta_seconds) == (12.0, 330.0)
    assert (media.dead, media.drain_eta_seconds) == (4, -1.0), "unknown drain time is negative"


def test_a_monitor_without_a_site_goes_offline_with_the_reason(tmp_path: Path) -> None:
    # Given an agent whose site has never started (no site.json)
    monitor = HealthMonitor("h1", "s1", tmp_path, thresholds=Thresholds(
        load_per_cpu_degraded=1e6, memory_degraded=1.0, disk_high_water=1.0, temperature_degraded_c=1000,
        degrade_after=3, offline_after=4))
    states = [monitor.sample() for _ in range(4)]
    # Then it degrades, then goes offline, and every sample says why
    assert [h.state for h in states] == [HEALTHY, HEALTHY, DEGRADED, OFFLINE]
    assert all(any(r.startswith("site s1 unreachable: SiteNotFound: ") and "site.json: no such file" in r
                   for r in h.reasons) for h in states), states[-1].reasons
    assert [d.mount for d in states[0].disks] == [str(tmp_path), "/"]
    monitor.close()
