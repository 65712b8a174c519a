"""The Script (spec §5.5): scenes with dialogue and actions, no camera instructions."""

from __future__ import annotations

from pydantic import Field

from pipeline.models.base import Model, Versioned
from pipeline.models.canon import ID_PATTERN, CharacterFact, Identifier
from pipeline.models.project import Emotion, Mood


class ScriptLine(Model):
    line_id: Identifier = Field(pattern=ID_PATTERN, description="Stable id: '<scene>-l<n>'.")
    speaker_id: Identifier
    speaker_name: str
    text: str = Field(min_length=1)
    emotion: Emotion = "neutral"


class Scene(Model):
    id: Identifier = Field(pattern=ID_PATTERN)
    heading: str
    location_id: Identifier
    time_of_day: str
    characters_present: tuple[Identifier, ...] = ()
    actions: tuple[str, ...] = ()
    dialogue: tuple[ScriptLine, ...] = ()
    emotional_tags: tuple[str, ...] = ()
    mood: Mood
    facts: tuple[CharacterFact, ...] = Field(
        default=(), description="Facts the scene asserts; the canon gate checks each one."
    )


class Script(Versioned):
    project_id: str
    tenant_id: str
    title: str
    episode_number: int
    generator: str = Field(description="Which generator wrote this script, with its version.")
    scenes: tuple[Scene, ...] = Field(min_length=1)
