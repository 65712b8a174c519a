"""The lineage, lineage-diff and cost pages: thin views over :mod:`control_plane.lineage` and
:mod:`control_plane.costs`, and the server-side layout of the lineage graph.

The graph is drawn on the server as inline SVG (no script, no CDN): columns by depth from the
project, one box per artifact, an edge per input. It scales to the page's width (``viewBox``), so
a phone shows it smaller, never wider than the screen; the same nodes are listed in a table below
it for keyboards and screen readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from control_plane import costs, lineage
from control_plane.errors import ControlInputError, NotFound
from control_plane.tables import RunRow

if TYPE_CHECKING:  # the pages table imports this module for its rows' views
    from control_plane.dashboard.pages import View

#: Other runs of the same project a lineage page offers to compare with.
COMPARE_CHOICES = 20
#: The graph's geometry, in SVG units (the SVG scales to the page's width).
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 30, 40, 10, 8


@dataclass(frozen=True)
class Box:
    role: str
    label: str
    kind: str
    hash: str
    state: str
    x: float
    y: float


@dataclass(frozen=True)
class Edge:
    path: str
    state: str


@dataclass(frozen=True)
class Drawing:
    width: float
    height: float
    boxes: list[Box]
    edges: list[Edge]


def layout(graph: lineage.Lineage, states: dict[str, str] | None = None) -> Drawing:
    """Columns by depth (the longest chain of inputs from a root), boxes stacked in the chain's order."""
    states = states or {}
    nodes = {n.role: n for n in graph.nodes}
    depth: dict[str, int] = {}

    def depth_of(role: str, path: tuple[str, ...] = ()) -> int:
        if role not in depth:
            inputs = [r for r in nodes[role].inputs if r in nodes and r not in path]
            depth[role] = 1 + max((depth_of(r, (*path, role)) for r in inputs), default=-1)
        return depth[role]

    columns: dict[int, list[str]] = {}
    for node in graph.nodes:  # already in the chain's order
        columns.setdefault(depth_of(node.role), []).append(node.role)
    tallest = max((len(c) for c in columns.values()), default=0)
    height = PAD * 2 + tallest * BOX_H + max(0, tallest - 1) * GAP_Y
    at: dict[str, tuple[float, float]] = {}
    for column, roles in columns.items():
        top = (height - (len(roles) * BOX_H + (len(roles) - 1) * GAP_Y)) / 2
        for row, role in enumerate(roles):
            at[role] = (PAD + column * (BOX_W + GAP_X), top + row * (BOX_H + GAP_Y))
    boxes = [Box(n.role, n.label, n.kind, n.hash, states.get(n.role, ""), *at[n.role]) for n in graph.nodes]
    edges = []
    for node in graph.nodes:
        x2, y2 = at[node.role]
        for source in node.inputs:
            if source not in at:
                continue
            x1, y1 = at[source]
            start, end = (x1 + BOX_W, y1 + BOX_H / 2), (x2, y2 + BOX_H / 2)
            bend = (start[0] + end[0]) / 2
            edges.append(Edge(f"M{start[0]:.1f},{start[1]:.1f} C{bend:.1f},{start[1]:.1f} {bend:.1f},{end[1]:.1f} "
                              f"{end[0]:.1f},{end[1]:.1f}", states.get(node.role, "")))
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    return Drawing(width, height, boxes, edges)


def _run_ref(v: View, name: str) -> tuple[str, str]:
    value = v.text(name, 160)
    if value is None:
        raise ControlInputError(f"{name}: missing: expected a run as SITE/RUN")
    site_id, sep, run_id = value.partition("/")
    if not sep or not site_id or not run_id:
        raise ControlInputError(f"{name}: value {value!r}: expected a run as SITE/RUN")
    return site_id, run_id


def _lineage(v: View, site_id: str, run_id: str) -> lineage.Lineage:
    try:
        return lineage.lineage(v.fleet.session, site_id, run_id, v.scope)
    except lineage.LineageError:  # absent, or another tenant's: the same answer
        raise NotFound(f"run {run_id!r}: no such run at site {site_id!r}") from None


def _same_project(v: View, graph: lineage.Lineage) -> list[RunRow]:
    """The newest other runs of the same project file at the run's site (an edited project keeps its path)."""
    return list(v.fleet.session.scalars(
        select(RunRow).where(RunRow.site_id == graph.site_id, RunRow.tenant_id == graph.tenant_id,
                             RunRow.project_path == graph.project_path, RunRow.run_id != graph.run_id)
        .order_by(RunRow.submitted_at.desc()).limit(COMPARE_CHOICES)))


def lineage_page(v: View) -> dict[str, Any]:
    """One run's artifact graph, and a form to compare it with another run of the same project."""
    graph = _lineage(v, v.path["site_id"], v.path["run_id"])
    return {"graph": graph, "drawing": layout(graph), "others": _same_project(v, graph)}


def lineage_diff_page(v: View) -> dict[str, Any]:
    """Two runs side by side: every artifact that differs, and why; the second run's graph with them marked."""
    a, b = _run_ref(v, "a"), _run_ref(v, "b")
    graph_a, graph_b = _lineage(v, *a), _lineage(v, *b)
    compared = lineage.compare(graph_a, graph_b)
    states = {c.role: c.state for c in compared.changes}
    changed = compared.changed()
    return {"diff": compared, "changed": changed, "same": [c for c in compared.changes if c.state == "same"],
            "drawing": layout(graph_b, states),
            "counts": {group: len(compared.changed(group)) for group in lineage.GROUPS}}


def cost_page(v: View) -> dict[str, Any]:
    """Compute seconds and spend per day, site, project and run over the last ``days`` days."""
    raw = v.text("days", 4) or str(costs.DEFAULT_DAYS)
    if not raw.isdigit():
        raise ControlInputError(f"days: value {raw!r}: expected a whole number of days, 1 to {costs.MAX_DAYS}")
    site = v.text("site", 64)
    shown = costs.report(v.fleet.session, v.now, int(raw), v.scope, v.budgets, site)
    peak = max((d.compute_s for d in shown.per_day), default=0.0)
    return {"report": shown, "site": site or "", "days": int(raw), "peak": peak if peak > 0 else math.inf,
            "sites": [s.site_id for s in v.fleet.sites(v.scope)]}
