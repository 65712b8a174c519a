"""Beats → Script (spec §5.5, §7): the writing stage.

The MVP writes scripts with a deterministic template (spec §19.0, option B): no network, no
model, no randomness and no clock, so the same project always yields the same Script bytes and
the artifact cache can key on its inputs. A generator never judges continuity; it states every
fact its scenes imply (who is present, alive and where) in ``Scene.facts`` and leaves judging
them to the canon gate, which is why an unknown speaker still gets a line here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, get_args

from pipeline.models.canon import Canon, CharacterFact, CharacterField
from pipeline.models.project import Beat, DialogueLine, Project
from pipeline.models.script import Scene, Script, ScriptLine

TEMPLATE_GENERATOR = "template-v1"

#: Facts sort by character, then in the order the fields are declared, so the gate's first
#: violation is the same on every run and every machine.
_FIELD_ORDER = {field: index for index, field in enumerate(get_args(CharacterField))}


class ScriptGenerator(Protocol):
    """What the orchestrator needs from any script writer, template or model.

    ``name`` (with its version) is recorded in ``Script.generator`` and belongs in the stage's
    cache key, so swapping generators never reuses the other's output.
    """

    name: str

    def generate(self, project: Project, canon: Canon) -> Script:
        """Write one Script for the project's episode from its beats and the canon snapshot."""
        ...


class TemplateGenerator:
    """The deterministic template writer: one scene per beat, dialogue copied verbatim."""

    name = TEMPLATE_GENERATOR

    def generate(self, project: Project, canon: Canon) -> Script:
        return generate_script(project, canon)


class LocalLLMGenerator:
    """The documented slot for a local-model writer (spec §19.0, option A); not built yet.

    When built it receives the same inputs as the template writer (the project and the canon
    snapshot as the context pack of §6.4), must return a Script that validates against the
    schema, must state each scene's facts as the template writer does, and must pin its model
    and sampling settings in ``name`` so its output stays reproducible and cacheable.
    """

    name = "local-llm-v0"

    def generate(self, project: Project, canon: Canon) -> Script:
        raise NotImplementedError("local-LLM script generation is not built yet; use the template generator")


def generate_script(project: Project, canon: Canon) -> Script:
    """Write the episode's Script from the project's beats: one scene per beat, in beat order."""
    return Script.create(
        project_id=project.id,
        tenant_id=project.tenant_id,
        title=project.title,
        episode_number=project.episode.episode_number,
        generator=TEMPLATE_GENERATOR,
        scenes=tuple(_scene(beat, project, canon) for beat in project.beats),
    )


def _scene(beat: Beat, project: Project, canon: Canon) -> Scene:
    lines = tuple(_line(beat.id, n, line, canon) for n, line in enumerate(beat.dialogue, start=1))
    present = _unique([*beat.characters, *(line.speaker_id for line in beat.dialogue)])
    return Scene(
        id=beat.id,
        heading=_heading(beat, canon),
        location_id=beat.location_id,
        time_of_day=beat.time_of_day,
        characters_present=present,
        actions=beat.actions or (_sentence(beat.summary),),
        dialogue=lines,
        emotional_tags=_unique(line.emotion for line in lines),
        mood=beat.mood or project.music.mood,
        facts=_facts(beat, present),
    )


def _heading(beat: Beat, canon: Canon) -> str:
    """A slugline without INT./EXT.; an unknown location shows its id (the gate reports it)."""
    location = canon.location(beat.location_id)
    place = location.name if location else beat.location_id
    return f"{place.upper()} — {beat.time_of_day.upper()}"


def _line(scene_id: str, n: int, line: DialogueLine, canon: Canon) -> ScriptLine:
    """Copy a beat's line; its id depends only on its position, so edits elsewhere keep it."""
    character = canon.character(line.speaker_id)
    canon_name = character.name if character else line.speaker_id
    return ScriptLine(
        line_id=f"{scene_id}-l{n}",
        speaker_id=line.speaker_id,
        speaker_name=canon_name if line.speaker_name is None else line.speaker_name,
        text=line.text,
        emotion=line.emotion,
    )


def _facts(beat: Beat, present: tuple[str, ...]) -> tuple[CharacterFact, ...]:
    """The beat's explicit facts plus what the scene implies."""
    credited = ((line.speaker_id, line.speaker_name) for line in beat.dialogue)
    return sort_facts([*beat.facts, *implied_facts(beat.location_id, present, credited)])


def implied_facts(
    location_id: str, present: Iterable[str], credited: Iterable[tuple[str, str | None]]
) -> list[CharacterFact]:
    """What a scene asserts without saying so: everyone present is alive and at its location,
    and a line credited to a name asserts that name. Shared with the canon gate, which re-derives
    these from the Script so it never depends on a generator having stated them."""
    implied: tuple[tuple[CharacterField, str], ...] = (("status", "alive"), ("location_id", location_id))
    facts = [
        CharacterFact(character_id=character_id, field=field, value=value)
        for character_id in present
        for field, value in implied
    ]
    facts += [
        CharacterFact(character_id=speaker_id, field="name", value=name)
        for speaker_id, name in credited
        if name is not None
    ]
    return facts


def sort_facts(facts: Iterable[CharacterFact]) -> tuple[CharacterFact, ...]:
    """Deduplicate and order facts by character, declared field order, then value."""
    unique = {_fact_key(fact): fact for fact in facts}
    return tuple(unique[key] for key in sorted(unique))


def _fact_key(fact: CharacterFact) -> tuple[str, int, str, str]:
    return fact.character_id, _FIELD_ORDER[fact.field], type(fact.value).__name__, str(fact.value)


def _sentence(summary: str) -> str:
    text = summary.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """Items in first-seen order without repeats."""
    return tuple(dict.fromkeys(items))
