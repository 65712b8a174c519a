"""Geometry of the two server-rendered graphics: a run's stage timeline and a host's last hour.

Computed here, drawn by the templates as inline SVG: the page needs no script to show them and the
numbers are testable. Coordinates are in a fixed ``viewBox`` (the SVG scales to its box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from control_plane.fleet import HostSample, StageView

#: The viewBox every chart is drawn in; the SVG scales to the page's width.
WIDTH, HEIGHT = 600.0, 120.0
LANE_H = 22.0


@dataclass(frozen=True)
class Bar:
    stage_id: str
    kind: str
    status: str
    x: float
    width: float
    start: float
    end: float


@dataclass(frozen=True)
class Lane:
    worker: str
    y: float
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Timeline:
    """Stages as bars on one lane per worker, between ``start`` and ``end`` (unix seconds)."""

    lanes: tuple[Lane, ...]
    start: float
    end: float
    height: float


def timeline(stages: Sequence[StageView], now: float) -> Timeline | None:
    """A Gantt-like layout; None when no stage has run yet.

    The centre knows when a stage last changed and how long it took: a finished stage spans
    ``updated_at - seconds`` to ``updated_at``; a running one spans from when it started to ``now``.
    """
    spans: list[tuple[str, StageView, float, float]] = []
    for stage in stages:
        if stage.status == "running":
            spans.append((stage.worker or "(unassigned)", stage, stage.updated_at, now))
        elif stage.seconds is not None:
            spans.append((stage.worker or "(cache)", stage, stage.updated_at - stage.seconds, stage.updated_at))
    if not spans:
        return None
    start, end = min(s[2] for s in spans), max(s[3] for s in spans)
    scale = WIDTH / max(end - start, 1e-3)
    lanes: dict[str, list[Bar]] = {}
    for worker, stage, began, ended in sorted(spans, key=lambda s: (s[2], s[1].stage_id)):
        lanes.setdefault(worker, []).append(Bar(stage.stage_id, stage.kind, stage.status, (began - start) * scale,
                                                max((ended - began) * scale, 1.5), began, ended))
    ordered = tuple(Lane(worker, i * LANE_H, tuple(bars)) for i, (worker, bars) in enumerate(sorted(lanes.items())))
    return Timeline(ordered, start, end, max(len(ordered), 1) * LANE_H)


@dataclass(frozen=True)
class Series:
    label: str
    css: str
    points: str
    latest: float


def history(samples: Sequence[HostSample], now: float, span_s: float = 3600.0) -> tuple[Series, ...]:
    """Polylines of the 1-minute load (scaled to its peak), memory used and the fullest disk over ``span_s``."""
    if not samples:
        return ()
    start = now - span_s
    peak_load = max(max(s.load_1m for s in samples), 1.0)

    def points(values: Sequence[tuple[float, float]]) -> str:
        return " ".join(f"{(t - start) / span_s * WIDTH:.1f},{HEIGHT - min(max(v, 0.0), 1.0) * HEIGHT:.1f}"
                        for t, v in values)

    def memory(s: HostSample) -> float:
        return s.memory_used_bytes / s.memory_total_bytes if s.memory_total_bytes else 0.0

    return (
        Series(f"load 1 min (peak {peak_load:.2f})", "load", points([(s.received_at, s.load_1m / peak_load)
                                                                     for s in samples]), samples[-1].load_1m),
        Series("memory used", "memory", points([(s.received_at, memory(s)) for s in samples]), memory(samples[-1])),
        Series("fullest disk", "disk", points([(s.received_at, s.disk_used_fraction) for s in samples]),
               samples[-1].disk_used_fraction),
    )
