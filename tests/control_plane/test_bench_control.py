"""``cinefleet bench control``'s command and runs-list parts at tiny sizes: they run against the real centre,
signer, site and agent, every command succeeds both ways (the bench raises otherwise), and every figure is a
real measurement."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cinefleet.bench import control


def test_command_and_runs_parts_measure_real_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "COMMAND_WARMUP", 1)
    monkeypatch.setattr(control, "RUNS_REPEAT", 3)
    figures = control.run_benchmark(workdir=tmp_path, commands=4, runs=600, parts=("command", "runs"))

    timed = ["command_p50_ms", "command_p99_ms", "command_direct_p50_ms", "command_direct_p99_ms"]
    timed += [f"runs_{key}_{kind}_ms" for key in ("first", "status", "tenant", "limited", "deep")
              for kind in ("p95", "query_p95")]
    for name in timed:
        assert math.isfinite(figures[name]) and figures[name] > 0, (name, figures[name])
    assert figures["command_p50_ms"] <= figures["command_p99_ms"]
    # 600 runs at 50 a page: the keyset walk ends on the 12th page, whose `next` is None
    assert figures["runs_deep_pages"] == 12
