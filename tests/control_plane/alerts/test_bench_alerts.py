"""``cinefleet bench alerts`` at tiny sizes: every part runs against the real receiver and every figure is measured."""

from __future__ import annotations

import math
from pathlib import Path

from cinefleet.bench import alerts


def test_delivery_and_burst_parts_measure_real_arrivals() -> None:
    figures = alerts.run_benchmark(messages=5, naive=0, parts=("delivery", "burst"))
    for name in ("delivery_p50_ms", "delivery_p99_ms", "delivery_raw_p50_ms", "delivery_raw_p99_ms",
                 "burst_last_s", "burst_raw_last_s"):
        assert math.isfinite(figures[name]) and figures[name] > 0, (name, figures[name])
    assert figures["delivery_p50_ms"] <= figures["delivery_p99_ms"]
    # apprise's own pacing would put the 20th message at 104.5 s
    assert figures["burst_last_s"] < alerts.APPRISE_GAP_S
    assert math.isnan(figures["burst_apprise_gap_s"])  # naive=0 skips plain apprise


def test_event_and_dedup_parts_run_the_real_emitter(tmp_path: Path) -> None:
    figures = alerts.run_benchmark(workdir=tmp_path, events=4, tick=0.2, duplicates=500, ticked=20,
                                   parts=("event", "dedup"))
    assert 0 < figures["event_p50_ms"] <= figures["event_p99_ms"]
    assert figures["event_tick_p50_ms"] > 0 and figures["event_raw_ms"] > 0
    # the bench itself raises unless exactly one notification arrived and a tick saw the last duplicate
    assert figures["dedup_notifications"] == 1
    assert figures["dedup_count"] >= 1 + 20 + 1  # the first, each ticked duplicate, at least one streamed
    assert figures["dedup_absorb_s"] >= figures["dedup_written_s"] > 0
    assert figures["dedup_ticked_per_event_ms"] > 0 and figures["dedup_quiet_tick_ms"] > 0
