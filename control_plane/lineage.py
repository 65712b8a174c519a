"""Lineage: which artifacts a run made from which, and how two runs of one project differ.

A read model over the replicated tables, no transport. The centre holds no artifact bytes, only
their registry rows (kind, parents, params) and each stage's outputs, so the graph is built from
those two: a node per artifact a stage of the run output, named by its *role* (the stage and the
output name, ``shot:harbour-radio-l1``), with edges from the artifact's recorded parents and from
the stage graph (a stage's inputs are what the stages it waits on output). Roles are what make two
runs comparable: the same role in two runs of one project is the same part of the episode, so a
different hash there is a different artifact, and the reason is found by walking its inputs back
to the first role that changed (and, for a shot, whether the line spoken in it changed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.fleet import Scope
from control_plane.tables import ArtifactRow, RunRow, StageRow

#: The documents of the chain, in order; the media roles follow them.
CHAIN = ("Project", "Canon", "Script", "ShotList", "AssetManifest", "RenderPlan")
#: Which output of which stage is which document of the chain.
DOCUMENT_ROLES = {("script", "project"): "Project", ("script", "canon"): "Canon", ("script", "script"): "Script",
                  ("shotlist", "shotlist"): "ShotList", ("assets", "manifest"): "AssetManifest",
                  ("render_plan", "plan"): "RenderPlan"}
#: The outputs of a stage that are artifacts (a media stage's ``key`` is its cache key, not an artifact).
ARTIFACT_OUTPUTS = {"file", "episode", "captions", "output", *(name for _, name in DOCUMENT_ROLES)}
#: How a role group is shown, in the order the chain runs.
GROUPS = ("documents", "voice lines", "shots", "mix", "episode")
BUNDLE = "bundle"


class LineageError(LookupError):
    """Raised when a run asked for is not there (or not in the caller's scope): the same answer for both."""


class Node(BaseModel):
    """One artifact of a run, in the role it plays there."""

    role: str
    group: str
    label: str
    hash: str
    kind: str
    stage_id: str | None
    #: Roles of this run it was made from.
    inputs: list[str]
    #: Recorded parents that are not outputs of a stage of the run (source images, the bundle).
    sources: list[str]
    size: int | None
    origin: str | None
    #: Whether the centre has the artifact's registry row (a site records each artifact once: a
    #: later run that reuses it adds no row, the first one's stands).
    recorded: bool


class Lineage(BaseModel):
    site_id: str
    run_id: str
    tenant_id: str
    project_path: str
    project_hash: str
    status: str
    nodes: list[Node]
    #: The shot each voice line is spoken in (voice role -> shot role), from the mix's placements.
    spoken_in: dict[str, str]

    def node(self, role: str) -> Node | None:
        return next((n for n in self.nodes if n.role == role), None)


class Change(BaseModel):
    """One role compared across two runs: ``same``, ``changed``, ``only_a`` or ``only_b``, and why."""

    role: str
    group: str
    label: str
    state: str
    hash_a: str | None
    hash_b: str | None
    why: str


class LineageDiff(BaseModel):
    a: Lineage
    b: Lineage
    changes: list[Change]

    def changed(self, group: str | None = None) -> list[Change]:
        return [c for c in self.changes if c.state != "same" and (group is None or c.group == group)]


@dataclass(frozen=True)
class _Stage:
    stage_id: str
    kind: str
    depends_on: list[str]
    outputs: dict[str, object]
    args: dict[str, object]


def _role(stage: _Stage, output: str) -> tuple[str, str, str]:
    """The role, group and label of one output of a stage."""
    document = DOCUMENT_ROLES.get((stage.kind, output))
    if document is not None:
        return document, "documents", document
    name = stage.stage_id.split(":", 1)[-1]
    if stage.kind == "shot":
        return stage.stage_id, "shots", f"shot {name}"
    if stage.kind == "voice":
        return stage.stage_id, "voice lines", f"voice line {name}"
    if stage.kind == "audio":
        return "audio", "mix", "audio mix"
    labels = {"episode": "episode video", "captions": "captions", "output": "RenderOutput"}
    return f"{stage.stage_id}:{output}", "episode", labels.get(output, output)


def _principal(stage: _Stage) -> list[str]:
    return [output for output in stage.outputs if output in ARTIFACT_OUTPUTS and isinstance(stage.outputs[output], str)]


def lineage(session: Session, site_id: str, run_id: str, scope: Scope = None) -> Lineage:
    """The artifact graph of one run, from its stages' outputs and the artifacts' registry rows.

    Raises:
        LineageError: no such run at the site, or it is outside ``scope``.
    """
    run = session.get(RunRow, (site_id, run_id))
    if run is None or (scope is not None and run.tenant_id not in scope):
        raise LineageError(f"run {run_id!r} at site {site_id!r}: not found")
    stages = {s.stage_id: _Stage(s.stage_id, s.kind, list(s.depends_on), dict(s.outputs), dict(s.args))
              for s in session.scalars(select(StageRow).where(StageRow.site_id == site_id, StageRow.run_id == run_id))}
    made: dict[str, list[tuple[str, str, str, str]]] = {}  # stage id -> (role, group, label, hash)
    for stage in stages.values():
        made[stage.stage_id] = [(*_role(stage, output), str(stage.outputs[output])) for output in _principal(stage)]
    hashes = {h for outputs in made.values() for *_rest, h in outputs}
    rows = _artifacts(session, site_id, run.tenant_id, hashes)
    role_of = {h: role for outputs in made.values() for role, _g, _l, h in outputs}
    nodes = []
    for stage_id, outputs in made.items():
        upstream = _inputs(stage_id, stages, made)
        for role, group, label, digest in outputs:
            row = rows.get(digest)
            parents = list(row.parents) if row is not None else []
            inputs = [r for r in upstream if r != role]
            inputs += [role_of[p] for p in parents if p in role_of and role_of[p] not in inputs and role_of[p] != role]
            if stages[stage_id].kind == "script" and role == "Project":
                sources = [run.project_hash]
            else:
                sources = [p for p in parents if p not in role_of]
            nodes.append(Node(role=role, group=group, label=label, hash=digest,
                              kind=row.kind if row is not None else label, stage_id=stage_id, inputs=inputs,
                              sources=sources, size=row.size if row is not None else None,
                              origin=row.compute_origin if row is not None else None, recorded=row is not None))
    nodes.sort(key=_order)
    return Lineage(site_id=site_id, run_id=run_id, tenant_id=run.tenant_id, project_path=run.project_path,
                   project_hash=run.project_hash, status=run.status, nodes=nodes, spoken_in=_spoken_in(stages))


def _spoken_in(stages: dict[str, _Stage]) -> dict[str, str]:
    """Voice role -> shot role, from the placements the mix stage was planned with."""
    placements = stages["audio"].args.get("placements", []) if "audio" in stages else []
    found = {}
    for placement in placements if isinstance(placements, list) else []:
        if isinstance(placement, dict) and "stage_id" in placement and "shot_id" in placement:
            found[str(placement["stage_id"])] = f"shot:{placement['shot_id']}"
    return found


def _order(node: Node) -> tuple[int, int, str]:
    group = GROUPS.index(node.group)
    return group, CHAIN.index(node.role) if node.role in CHAIN else len(CHAIN), node.role


def _inputs(stage_id: str, stages: dict[str, _Stage], made: dict[str, list[tuple[str, str, str, str]]]) -> list[str]:
    """The roles a stage's work took in: what the stages it waits on made (through stages that make nothing)."""
    found: list[str] = []
    seen: set[str] = set()
    todo = list(stages[stage_id].depends_on)
    while todo:
        upstream = todo.pop(0)
        if upstream in seen or upstream not in stages:
            continue
        seen.add(upstream)
        outputs = made.get(upstream, [])
        if outputs:
            found += [role for role, _g, _l, _h in outputs if role not in found]
        else:  # a gate (canon_gate) makes nothing: what it waited on flows through it
            todo += stages[upstream].depends_on
    return found


def _artifacts(session: Session, site_id: str, tenant_id: str, hashes: Iterable[str]) -> dict[str, ArtifactRow]:
    """The registry rows of ``hashes`` as the run's site recorded them (its registry is the site's own):
    primary-key lookups, whatever the size of the fleet's artifact table."""
    wanted = sorted(set(hashes))
    rows: dict[str, ArtifactRow] = {}
    for first in range(0, len(wanted), 500):
        for row in session.scalars(select(ArtifactRow).where(
                ArtifactRow.site_id == site_id, ArtifactRow.tenant_id == tenant_id,
                ArtifactRow.hash.in_(wanted[first:first + 500]))):
            rows[row.hash] = row
    return rows


def compare(a: Lineage, b: Lineage) -> LineageDiff:
    """Every role of either run, same or not, and for each that differs the reason found in the graph."""
    nodes_a, nodes_b = {n.role: n for n in a.nodes}, {n.role: n for n in b.nodes}
    changed = {role for role in nodes_a.keys() | nodes_b.keys()
               if (nodes_a.get(role) and nodes_a[role].hash) != (nodes_b.get(role) and nodes_b[role].hash)}
    changes = []
    for role in sorted(nodes_a.keys() | nodes_b.keys(), key=lambda r: _order(nodes_b.get(r) or nodes_a[r])):
        node_a, node_b = nodes_a.get(role), nodes_b.get(role)
        shown = node_b or node_a
        assert shown is not None
        if node_a is None or node_b is None:
            state = "only_b" if node_a is None else "only_a"
            why = f"only run {b.run_id if node_a is None else a.run_id} has it (the other's plan has no such part)"
        elif role not in changed:
            state, why = "same", _why_same(node_b, changed)
        else:
            state, why = "changed", _why_changed(node_a, node_b, changed, a, b)
        changes.append(Change(role=role, group=shown.group, label=shown.label, state=state,
                              hash_a=node_a.hash if node_a else None, hash_b=node_b.hash if node_b else None, why=why))
    return LineageDiff(a=a, b=b, changes=changes)


def _why_same(node: Node, changed: set[str]) -> str:
    moved = [role for role in node.inputs if role in changed]
    if moved:
        return f"identical although {', '.join(moved)} changed: what it takes from them did not"
    return "identical inputs"


def _why_changed(node_a: Node, node_b: Node, changed: set[str], a: Lineage, b: Lineage) -> str:
    if node_b.role == "Project":
        return f"the project file differs (bundle {a.project_hash[:12]} → {b.project_hash[:12]})"
    reasons = []
    spoken = [role for role in changed if b.spoken_in.get(role, a.spoken_in.get(role)) == node_b.role]
    if node_b.group == "shots" and spoken:
        reasons.append(f"the line spoken in it changed ({', '.join(sorted(spoken))})")
    moved = [role for role in node_b.inputs if role in changed and role not in spoken]
    if moved:
        reasons.append(f"its input{'s' if len(moved) > 1 else ''} {', '.join(moved)} changed")
    if set(node_a.sources) != set(node_b.sources):
        reasons.append("its source files differ")
    if not reasons:
        reasons.append("its own part of the changed inputs differs (its render key changed)")
    return "; ".join(reasons)


def diff(session: Session, site_a: str, run_a: str, site_b: str, run_b: str, scope: Scope = None) -> LineageDiff:
    """Compare two runs (each at its own site).

    Raises:
        LineageError: either run is missing or outside ``scope``.
    """
    a, b = lineage(session, site_a, run_a, scope), lineage(session, site_b, run_b, scope)
    return compare(a, b)
