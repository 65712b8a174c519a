"""``cinefleet bench dashboard`` run tiny: it seeds, signs in, fetches every page and prints its figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cinefleet.bench import dashboard
from cinefleet.cli import app


def test_the_benchmark_times_every_page_beside_its_baselines(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    figures = dashboard.run_benchmark(workdir=tmp_path, runs=300, hosts=10, requests=3)
    printed = capsys.readouterr().out
    names = dashboard.pages({"pair": ("s/a", "s/b"), "run": "s/r"})
    for label in names:
        assert figures[f"{label} p95_ms"] >= figures[f"{label} p50_ms"] > 0, label
        assert label in printed
    assert figures["static file /static/dash.css p95_ms"] > 0 and figures["GET /api/v1/fleet (JSON) p95_ms"] > 0
    assert figures["worst_page_p95_ms"] == max(figures[f"{label} p95_ms"] for label in names)
    assert "300 runs, 1,800 stages" in printed and "ratio to the goal" in printed


def test_bad_options_are_refused_naming_them() -> None:
    result = CliRunner().invoke(app, ["bench", "dashboard", "--runs", "0"])
    assert result.exit_code == 2 and "--runs 0" in result.output
