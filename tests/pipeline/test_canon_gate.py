"""The canon gate's regression corpus (spec §28.2 step 3) and its contract.

The cases live as data in ``canon_cases/`` so a new continuity bug becomes a new case, not new
code. Each blocked case must report its rule and a message that names the character and both
facts: an author has to be able to fix the project from the message alone.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import GateBlocked
from pipeline.models import Canon, CanonDiff, Project
from pipeline.stages.canon_gate import apply_diffs, check_script, find_violations, validate_diff
from pipeline.stages.script import generate_script

ROOT = Path(__file__).resolve().parents[2]
PILOT = ROOT / "examples" / "pilot"
CASES = Path(__file__).parent / "canon_cases"

DIFF_DEFAULTS = {
    "schema_version": "1.0.0",
    "justification": "canon regression case",
    "provenance": "tests/pipeline/canon_cases",
    "approved": True,
}


def _cases(name: str) -> list[dict[str, Any]]:
    return json.loads((CASES / name).read_text(encoding="utf-8"))["cases"]


def _pilot_data() -> dict[str, Any]:
    return json.loads((PILOT / "project.json").read_text(encoding="utf-8"))


def _diff(fields: dict[str, Any]) -> dict[str, Any]:
    return {**DIFF_DEFAULTS, **fields}


def _edited(data: dict[str, Any], edits: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply a case's edits to a copy of a project document."""
    data = copy.deepcopy(data)
    for edit in edits:
        if "add_diff" in edit:
            data.setdefault("canon_diffs", []).append(_diff(edit["add_diff"]))
            continue
        path = edit.get("set") or edit["append"]
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if "set" in edit:
            parent[path[-1]] = edit["value"]
        else:
            parent.setdefault(path[-1], []).append(edit["value"])
    return data


def _gate(project: Project) -> Canon:
    """The gate as a render runs it: approved diffs first, then the script against the result."""
    assert isinstance(project.canon, Canon)
    canon, _ = apply_diffs(project.canon, project.canon_diffs)
    check_script(canon, generate_script(project, canon))
    return canon


CONTRADICTIONS = _cases("contradictions.json")
VALID_DIFFS = _cases("valid_diffs.json")


def test_the_pilot_passes_the_gate() -> None:
    canon = _gate(Project.model_validate(_pilot_data()))
    mara = canon.character("mara")
    assert mara is not None and mara.location_id == "harbour"


@pytest.mark.parametrize("case", CONTRADICTIONS, ids=[case["id"] for case in CONTRADICTIONS])
def test_contradiction_is_blocked(case: dict[str, Any]) -> None:
    project = Project.model_validate(_edited(case.get("project") or _pilot_data(), case["edits"]))
    with pytest.raises(GateBlocked) as blocked:
        _gate(project)
    error = blocked.value
    assert (error.gate, error.rule) == ("canon", case["rule"]), error.facts
    if case["character"] is not None:
        assert f"'{case['character']}'" in error.facts
    for fact in case["mentions"]:
        assert fact in error.facts, f"{fact!r} missing from {error.facts!r}"


@pytest.mark.parametrize("case", VALID_DIFFS, ids=[case["id"] for case in VALID_DIFFS])
def test_valid_diff_is_applied(case: dict[str, Any]) -> None:
    project = Project.model_validate(_pilot_data())
    assert isinstance(project.canon, Canon)
    diffs = [*project.canon_diffs, *(CanonDiff.model_validate(_diff(d)) for d in case["diffs"])]

    canon, outcomes = apply_diffs(project.canon, diffs)

    assert [outcome.outcome for outcome in outcomes] == case["outcomes"]
    applied = [outcome for outcome in outcomes if outcome.outcome == "applied"]
    assert all(outcome.validation.accepted for outcome in applied)
    for character_id, fields in case["expect"].items():
        character = canon.character(character_id)
        if fields is None:
            assert character is None
            continue
        assert character is not None
        assert {field: getattr(character, field) for field in fields} == fields
    for location_id in case.get("locations", ()):
        assert canon.location(location_id) is not None
    assert Canon.model_validate_json(canon.model_dump_json()) == canon, "the new canon must round-trip"


def test_unapproved_diff_is_validated_for_the_reviewer_but_not_applied() -> None:
    project = Project.model_validate(_pilot_data())
    assert isinstance(project.canon, Canon)
    pending = CanonDiff.model_validate(
        _diff(
            {
                "id": "ada-returns",
                "approved": False,
                "modified_facts": [{"character_id": "ada", "field": "status", "value": "alive"}],
            }
        )
    )
    canon, outcomes = apply_diffs(project.canon, [pending])
    assert canon == project.canon
    assert outcomes[0].outcome == "pending"
    assert not outcomes[0].validation.accepted
    assert outcomes[0].validation.violations[0].startswith("death_status: diff 'ada-returns' character 'ada'")


def test_validate_diff_lists_every_violation_with_its_rule() -> None:
    project = Project.model_validate(_pilot_data())
    assert isinstance(project.canon, Canon)
    diff = CanonDiff.model_validate(
        _diff(
            {
                "id": "many-wrongs",
                "modified_facts": [
                    {"character_id": "elias", "field": "age", "value": 12},
                    {"character_id": "mara", "field": "name", "value": "Mary"},
                ],
                "removed_characters": ["ghost"],
            }
        )
    )
    validation = validate_diff(project.canon, diff)
    assert not validation.accepted
    assert [v.split(":")[0] for v in validation.violations] == ["age", "name", "unknown_character"]
    with pytest.raises(GateBlocked) as blocked:
        apply_diffs(project.canon, [diff])
    assert blocked.value.rule == "age"
    assert "name 'Mary'" in blocked.value.facts and "removes character 'ghost'" in blocked.value.facts


def test_find_violations_reports_all_in_scene_order() -> None:
    data = _edited(
        _pilot_data(),
        [
            {"append": ["beats", 3, "characters"], "value": "ada"},
            {"set": ["beats", 0, "dialogue", 0, "speaker_name"], "value": "Eli"},
        ],
    )
    project = Project.model_validate(data)
    assert isinstance(project.canon, Canon)
    canon, _ = apply_diffs(project.canon, project.canon_diffs)
    violations = find_violations(canon, generate_script(project, canon))
    assert [(v.rule, v.character_id) for v in violations] == [("name", "elias"), ("death_status", "ada")]


def test_gate_rederives_facts_a_generator_left_out() -> None:
    """A script whose scenes state no facts (a careless generator) is still checked."""
    data = _edited(
        _pilot_data(),
        [{"append": ["beats", 2, "dialogue"], "value": {"speaker_id": "ada", "text": "Keep the light burning."}}],
    )
    project = Project.model_validate(data)
    assert isinstance(project.canon, Canon)
    canon, _ = apply_diffs(project.canon, project.canon_diffs)
    script = generate_script(project, canon)
    bare = script.model_copy(update={"scenes": tuple(s.model_copy(update={"facts": ()}) for s in script.scenes)})
    with pytest.raises(GateBlocked) as blocked:
        check_script(canon, bare)
    assert blocked.value.rule == "death_status"
    assert "character 'ada' (Ada Crane)" in blocked.value.facts


def test_external_canon_file_matches_the_inline_canon() -> None:
    inline = _pilot_data()
    external = json.loads((PILOT / "project-external-canon.json").read_text(encoding="utf-8"))
    canon_file = json.loads((PILOT / "canon.json").read_text(encoding="utf-8"))
    assert external["canon"] == "canon.json"
    assert canon_file == inline["canon"]
    assert {**external, "canon": inline["canon"]} == inline
