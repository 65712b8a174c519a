"""``cinefleet bench control``'s command and runs-list parts at tiny sizes: they run against the real centre,
signer, site and agent, every command succeeds both ways, and every figure is a real measurement."""

from __future__ import annotations

import math
from pathlib import Path

from cinefleet.bench import control


def test_command_and_runs_parts_measure_real_round_trips(tmp_path: Path) -> None:
    figures = control.run_benchmark(workdir=tmp_path, commands=4, runs=600, parts=("command", "runs"))

    for name in ("command_p50_ms", "command_p99_ms", "command_direct_p50_ms", "command_direct_p99_ms",
                 "runs_first_p95_ms", "runs_status_p95_ms", "runs_tenant_p95_ms", "runs_limited_p95_ms",
                 "runs_deep_p95_ms"):
        assert math.isfinite(figures[name]) and figures[name] > 0, (name, figures[name])
    assert figures["command_p50_ms"] <= figures["command_p99_ms"]
    # 600 runs at 50 a page: the keyset walk ends on the 12th page, whose `next` is None
    assert figures["runs_deep_pages"] == 12
