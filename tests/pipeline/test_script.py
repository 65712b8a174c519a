"""The template script generator: deterministic, stable line ids, and honest about its facts.

Determinism is what lets the artifact cache key the Script on its inputs; stable line ids are
what let a one-line edit re-render one shot instead of the episode.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.canonical import model_bytes
from pipeline.models import AssetLibrary, Canon, Project, Script
from pipeline.models.canon import CharacterFact
from pipeline.stages.canon_gate import apply_diffs
from pipeline.stages.script import (
    LocalLLMGenerator,
    ScriptGenerator,
    TemplateGenerator,
    generate_script,
)

PILOT = Path(__file__).resolve().parents[2] / "examples" / "pilot"


def _pilot_data() -> dict[str, Any]:
    return json.loads((PILOT / "project.json").read_text(encoding="utf-8"))


def _script(data: dict[str, Any]) -> tuple[Script, Canon]:
    project = Project.model_validate(data)
    assert isinstance(project.canon, Canon)
    canon, _ = apply_diffs(project.canon, project.canon_diffs)
    return generate_script(project, canon), canon


def test_same_project_gives_identical_bytes() -> None:
    first, _ = _script(_pilot_data())
    second, _ = _script(json.loads(json.dumps(_pilot_data())))
    assert model_bytes(first) == model_bytes(second)
    assert Script.model_validate_json(model_bytes(first)) == first


def test_one_scene_per_beat_with_stable_line_ids() -> None:
    script, _ = _script(_pilot_data())
    assert [scene.id for scene in script.scenes] == [beat["id"] for beat in _pilot_data()["beats"]]
    for scene in script.scenes:
        assert [line.line_id for line in scene.dialogue] == [
            f"{scene.id}-l{n}" for n in range(1, len(scene.dialogue) + 1)
        ]
    assert script.generator == "template-v1"


def test_editing_one_line_changes_only_that_line() -> None:
    data = _pilot_data()
    before, _ = _script(data)
    edited = copy.deepcopy(data)
    edited["beats"][2]["dialogue"][0]["text"] = "I see them. Steer by my light."
    after, _ = _script(edited)

    changed = [
        (scene.id, line.line_id)
        for old_scene, scene in zip(before.scenes, after.scenes, strict=True)
        for old, line in zip(old_scene.dialogue, scene.dialogue, strict=True)
        if old != line
    ]
    assert changed == [("steer-by-the-light", "steer-by-the-light-l1")]
    strip = {"dialogue"}
    assert [s.model_dump(exclude=strip) for s in before.scenes] == [s.model_dump(exclude=strip) for s in after.scenes]


def test_appending_a_line_keeps_existing_ids() -> None:
    data = _pilot_data()
    before, _ = _script(data)
    data["beats"][1]["dialogue"].append({"speaker_id": "mara", "text": "Gull Point, do you read me?"})
    after, _ = _script(data)
    assert before.scenes[1].dialogue[0] == after.scenes[1].dialogue[0]
    assert after.scenes[1].dialogue[1].line_id == "harbour-radio-l2"


def test_scene_fields_come_from_beat_canon_and_project() -> None:
    script, _ = _script(_pilot_data())
    opening, radio, _, lamp, dawn = script.scenes
    assert opening.heading == "GULL POINT LIGHTHOUSE — NIGHT"
    assert dawn.heading == "SALTMARSH HARBOUR — DAWN"
    assert opening.actions == (
        "Rain lashes the lantern glass of Gull Point.",
        "Elias climbs the iron stair with an oil can.",
    )
    assert lamp.actions == ("A gust breaks a pane, the lamp gutters out, and Elias relights it by hand.",)
    assert radio.dialogue[0].speaker_name == "Mara Voss"  # not given in the beat: the canon's name
    assert radio.emotional_tags == ("afraid",)
    assert lamp.emotional_tags == ()
    assert (opening.mood, dawn.mood) == ("tense", "upbeat")


def test_mood_falls_back_to_the_project_music_mood() -> None:
    data = _pilot_data()
    del data["beats"][3]["mood"]
    data["music"]["mood"] = "somber"
    script, _ = _script(data)
    assert script.scenes[3].mood == "somber"


def test_facts_are_explicit_plus_implied_in_a_fixed_order() -> None:
    script, _ = _script(_pilot_data())
    opening, radio = script.scenes[:2]
    assert opening.facts == (
        CharacterFact(character_id="elias", field="name", value="Elias Crane"),
        CharacterFact(character_id="elias", field="age", value=67),
        CharacterFact(character_id="elias", field="status", value="alive"),
        CharacterFact(character_id="elias", field="location_id", value="lighthouse"),
    )
    # No name was given in the beat, so the scene asserts none.
    assert [fact.field for fact in radio.facts] == ["status", "location_id"]


def test_speakers_join_the_scene_and_unknown_speakers_keep_their_id() -> None:
    data = _pilot_data()
    data["beats"][1]["dialogue"].append({"speaker_id": "tom", "text": "Kittiwake here, taking water."})
    script, _ = _script(data)
    radio = script.scenes[1]
    assert radio.characters_present == ("mara", "tom")
    assert radio.dialogue[1].speaker_name == "tom"
    assert CharacterFact(character_id="tom", field="status", value="alive") in radio.facts


def test_unknown_location_heading_shows_its_id() -> None:
    data = _pilot_data()
    data["beats"][3]["location_id"] = "cellar"
    script, _ = _script(data)
    assert script.scenes[3].heading == "CELLAR — NIGHT"


def test_generators_share_one_interface() -> None:
    project = Project.model_validate(_pilot_data())
    assert isinstance(project.canon, Canon)
    template: ScriptGenerator = TemplateGenerator()
    assert template.generate(project, project.canon) == generate_script(project, project.canon)
    llm: ScriptGenerator = LocalLLMGenerator()
    with pytest.raises(NotImplementedError, match="use the template generator"):
        llm.generate(project, project.canon)


def test_pilot_library_lacks_exactly_one_needed_asset() -> None:
    """The pilot demonstrates a placeholder: one asset its script needs is not in the library,
    and the library's unknown-licence asset is one nobody needs."""
    script, _ = _script(_pilot_data())
    needed = {f"bg_{scene.location_id}" for scene in script.scenes}
    needed |= {f"char_{line.speaker_id}" for scene in script.scenes for line in scene.dialogue}
    library = AssetLibrary.model_validate_json((PILOT / "assets" / "library.json").read_bytes())
    licensed = {asset.id for asset in library.assets if asset.license is not None}
    unlicensed = {asset.id for asset in library.assets if asset.license is None}

    assert needed - licensed == {"bg_harbour"}
    assert unlicensed == {"prop_lantern"} and not unlicensed & needed
    for asset in library.assets:
        assert (PILOT / "assets" / asset.file).stat().st_size < 60_000
