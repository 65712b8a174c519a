"""Lineage and cost read models on real replicated data: a site renders the short pilot, then the same
project after a one-line edit, and ships both runs to a real centre; the graphs, the diff and the
cost sums are read from the centre's database."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane import costs
from control_plane.costs import BudgetError, Budgets, load_budgets, parse_budgets
from control_plane.dashboard_testing import sign_in
from control_plane.fleet import Fleet
from control_plane.lineage import CHAIN, LineageError, diff, lineage
from control_plane.people import People
from control_plane.tables import CostRow
from control_plane.testing import Centre
from pipeline.testing import short_pilot_project
from site_scheduler.database import open_engine as open_site_engine
from site_scheduler.tables import OutboxRow
from site_scheduler.testing import Site
from tests.pipeline.conftest import require_espeak

SITE_ID = "lin1"
#: The pilot's first dialogue line of its second beat: spoken in shot ``harbour-radio-l1``.
EDITED_SHOT = "shot:harbour-radio-l1"


@dataclass
class Runs:
    centre: Centre
    site: Site
    first: str
    edited: str


def edit_one_line(project: Path) -> None:
    """The one-line edit: the text of one dialogue line, nothing else."""
    data = json.loads(project.read_text())
    data["beats"][1]["dialogue"][0]["text"] = "Gull Point, this is Saltmarsh. Two boats are still out."
    project.write_text(json.dumps(data, indent=2))


def _replicated(centre: Centre, site: Site) -> bool:
    """Has the centre applied the site's whole outbox (the runs, stages, artifacts and costs)?

    At least up to the head read now: the site goes on writing (a worker turning idle), so the cursor may pass it.
    """
    engine = open_site_engine(site.client.endpoints.db_url)
    try:
        with Session(engine) as session:
            head = session.scalar(select(func.max(OutboxRow.seq))) or 0
    finally:
        engine.dispose()

    def caught_up(fleet: Fleet) -> bool:
        return any(s.site_id == site.site_id and s.cursor >= head for s in fleet.sites())

    return centre.wait_until(caught_up, "the centre to apply the site's whole outbox", 60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    require_espeak()
    root = tmp_path_factory.mktemp("lineage")
    with Centre(data_dir=root / "centre", logs=root / "logs", interval_s=0.5) as centre:
        data_dir = root / SITE_ID
        data_dir.mkdir(mode=0o700)
        centre.add_site(SITE_ID, data_dir / "control.token")
        with Site(data_dir=data_dir, logs=root / "logs", site_id=SITE_ID,
                  options=["--control", centre.address]) as site:
            site.start_worker("w1")
            project = short_pilot_project(root / "project" / "project.json")
            first = site.client.submit(project)
            assert site.wait(first)["status"] == "completed"
            edit_one_line(project)
            edited = site.client.submit(project)
            assert site.wait(edited)["status"] == "completed"
            _replicated(centre, site)
            yield Runs(centre, site, first, edited)


def test_a_runs_graph_runs_script_to_episode_from_its_stages_and_artifacts(runs: Runs) -> None:
    with Session(runs.centre.engine) as session:
        graph = lineage(session, SITE_ID, runs.first)
    roles = [n.role for n in graph.nodes]
    assert roles[:len(CHAIN)] == list(CHAIN), "the documents come first, in the chain's order"
    shots = [n for n in graph.nodes if n.group == "shots"]
    assert len(shots) == 4 and EDITED_SHOT in {n.role for n in shots}
    script, shotlist, manifest, plan = (graph.node(r) for r in ("Script", "ShotList", "AssetManifest", "RenderPlan"))
    assert script and shotlist and manifest and plan
    assert {"Project", "Canon"} <= set(script.inputs)
    assert "Script" in shotlist.inputs and "ShotList" in manifest.inputs
    assert {"ShotList", "AssetManifest"} <= set(plan.inputs)
    assert all(shot.inputs == ["RenderPlan"] or "RenderPlan" in shot.inputs for shot in shots)
    episode = graph.node("finish:episode")
    assert episode is not None and episode.kind == "Episode"
    assert {n.role for n in shots} | {"audio"} <= set(episode.inputs), "the episode is made of every shot and the mix"
    # The first run recorded every artifact it made: each node has its registry row (kind, size).
    assert all(n.recorded and n.size for n in graph.nodes), [n.role for n in graph.nodes if not n.recorded]
    assert graph.spoken_in, "the mix's placements say which shot each line is spoken in"


def test_the_diff_after_a_one_line_edit_names_exactly_the_changed_shot_and_why(runs: Runs) -> None:
    with Session(runs.centre.engine) as session:
        compared = diff(session, SITE_ID, runs.first, SITE_ID, runs.edited)
    assert [c.role for c in compared.changed("shots")] == [EDITED_SHOT]
    [shot] = compared.changed("shots")
    assert "line spoken in it changed" in shot.why and "voice:" in shot.why, shot.why
    assert len(compared.changed("voice lines")) == 1
    unchanged = [c for c in compared.changes if c.group == "shots" and c.state == "same"]
    assert len(unchanged) == 3 and all("RenderPlan" in c.why for c in unchanged), "the others were reused: says so"
    project = next(c for c in compared.changes if c.role == "Project")
    assert project.state == "changed" and "project file differs" in project.why
    script = next(c for c in compared.changes if c.role == "Script")
    assert script.state == "changed" and "Project" in script.why
    assert next(c for c in compared.changes if c.role == "Canon").state == "same"
    assert next(c for c in compared.changes if c.role == "finish:episode").state == "changed"


def test_a_run_outside_the_callers_tenants_or_absent_is_not_found(runs: Runs) -> None:
    with Session(runs.centre.engine) as session:
        with pytest.raises(LineageError, match="not found"):
            lineage(session, SITE_ID, runs.first, scope=["someone-else"])
        with pytest.raises(LineageError, match="'nope'"):
            lineage(session, SITE_ID, "nope")


def test_costs_sum_the_replicated_attempts_per_run_project_site_and_day(runs: Runs) -> None:
    with Session(runs.centre.engine) as session:
        seconds = {run: float(s or 0.0) for run, s in session.execute(
            select(CostRow.run_id, func.sum(CostRow.compute_seconds)).group_by(CostRow.run_id))}
        attempts = session.scalar(select(func.count()).select_from(CostRow))
        budgets = Budgets({"run": {"compute_s": seconds[runs.first] * 0.9}, "site": {"compute_s": 1e9}})
        shown = costs.report(session, time.time(), budgets=budgets)
    assert {line.run_id: line.compute_s for line in shown.runs} == pytest.approx(seconds)
    assert shown.attempts == attempts and shown.total_compute_s == pytest.approx(sum(seconds.values()))
    [project] = shown.projects
    assert project.compute_s == pytest.approx(sum(seconds.values())) and "project.json" in project.label
    [site] = shown.sites
    assert site.key == SITE_ID and site.standing == ""
    assert sum(d.compute_s for d in shown.per_day) == pytest.approx(sum(seconds.values()))
    first = next(line for line in shown.runs if line.run_id == runs.first)
    assert first.standing == "over" and first.budget == f"{seconds[runs.first] * 0.9:,.0f} s"
    with Session(runs.centre.engine) as session:
        scoped = costs.report(session, time.time(), scope=["someone-else"])
        assert scoped.runs == [] and scoped.total_compute_s == 0
        assert costs.run_cost(session, SITE_ID, runs.first).compute_s == pytest.approx(seconds[runs.first])


def test_a_bad_budgets_file_is_refused_naming_the_field_and_value(tmp_path: Path) -> None:
    assert load_budgets(tmp_path).limits == {}
    (tmp_path / costs.BUDGETS_FILE).write_text('{"run": {"usd": -1}}')
    with pytest.raises(BudgetError, match=r"budgets.json: field run.usd: value -1: expected a positive number"):
        load_budgets(tmp_path)
    with pytest.raises(BudgetError, match="field 'week': expected one of run, project, site, day"):
        parse_budgets({"week": {"usd": 1}}, "x")
    (tmp_path / costs.BUDGETS_FILE).write_text("{")
    with pytest.raises(BudgetError, match="not JSON"):
        load_budgets(tmp_path)
    assert parse_budgets({"day": {"usd": 5, "compute_s": 60}}, "x").limit("day", "usd") == 5.0


def test_the_pages_show_the_graph_the_diff_and_the_costs_to_a_viewer(runs: Runs) -> None:
    people = People(runs.centre.engine)
    people.add_user("lin-viewer", "viewer")
    people.add_user("lin-other", "viewer", ["someone-else"])
    with httpx.Client(base_url=runs.centre.url, timeout=30) as client, \
            httpx.Client(base_url=runs.centre.url, timeout=30) as other:
        sign_in(client, people.create_token("lin-viewer").token)
        sign_in(other, people.create_token("lin-other").token)
        page = client.get(f"/runs/{SITE_ID}/{runs.first}/lineage")
        assert page.status_code == 200, page.text
        assert page.text.count('<g class="node') == len(lineage_nodes(runs)) and "<svg" in page.text
        assert f'value="{SITE_ID}/{runs.edited}"' in page.text, "the edited run is offered for comparison"
        compared = client.get("/lineage", params={"a": f"{SITE_ID}/{runs.first}", "b": f"{SITE_ID}/{runs.edited}"})
        assert compared.status_code == 200, compared.text
        changed_rows = re.findall(r'<tr data-role="([^"]+)" data-group="shots">', compared.text)
        assert changed_rows == [EDITED_SHOT]
        assert compared.text.count('class="node d-changed"') >= 1
        cost = client.get("/cost")
        assert cost.status_code == 200 and runs.first in cost.text and SITE_ID in cost.text
        assert client.get("/cost", params={"days": "x"}).status_code == 422
        assert client.get("/lineage", params={"a": "nope"}).status_code == 422
        # Another tenant's viewer: the run does not exist for them
        assert other.get(f"/runs/{SITE_ID}/{runs.first}/lineage").status_code == 404
        assert runs.first not in other.get("/cost").text


def lineage_nodes(runs: Runs) -> list[str]:
    with Session(runs.centre.engine) as session:
        return [n.role for n in lineage(session, SITE_ID, runs.first).nodes]
