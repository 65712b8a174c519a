"""The project file: everything a render needs that a human writes (spec §5.1, §5.4).

Documented for authors in ``docs/project-file.md``. Paths inside it are relative to the file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from pipeline.models.base import Model, Versioned
from pipeline.models.canon import ID_PATTERN, Canon, CanonDiff, CharacterFact, Identifier

CharacterId = Annotated[str, Field(pattern=ID_PATTERN)]
Mood = Literal["calm", "tense", "upbeat", "somber"]
Emotion = Literal["neutral", "happy", "sad", "angry", "afraid", "surprised", "tender", "determined"]


class TargetDuration(Model):
    seconds: PositiveFloat
    tolerance: float = Field(default=0.25, gt=0, le=1, description="Allowed relative deviation.")

    @property
    def window(self) -> tuple[float, float]:
        return self.seconds * (1 - self.tolerance), self.seconds * (1 + self.tolerance)


class ProfileSettings(Model):
    width: PositiveInt = Field(default=1280, multiple_of=2)
    height: PositiveInt = Field(default=720, multiple_of=2)
    fps: Literal[24, 25, 30] = 24


class CostPolicy(Model):
    max_budget_usd: float = Field(default=0.0, ge=0)
    external_allowed: bool = False


class DialogueLine(Model):
    speaker_id: Identifier = Field(pattern=ID_PATTERN)
    text: str = Field(min_length=1, max_length=400)
    emotion: Emotion = "neutral"
    speaker_name: str | None = Field(
        default=None, description="The name the line is credited to; must match the canon."
    )


class Beat(Model):
    """One story beat; the script generator turns each into a scene."""

    id: Identifier = Field(pattern=ID_PATTERN)
    summary: str = Field(min_length=1)
    location_id: Identifier = Field(pattern=ID_PATTERN)
    time_of_day: Literal["dawn", "day", "dusk", "night"] = "day"
    characters: tuple[CharacterId, ...] = ()
    actions: tuple[str, ...] = ()
    dialogue: tuple[DialogueLine, ...] = ()
    facts: tuple[CharacterFact, ...] = Field(
        default=(), description="Facts the scene states outright, checked against the canon."
    )
    mood: Mood | None = None


class Episode(Versioned):
    episode_number: PositiveInt
    arc_reference: str = ""
    summary: str = ""
    new_facts: tuple[str, ...] = ()
    unresolved_threads: tuple[str, ...] = ()


class AssetSettings(Model):
    library: str = Field(default="assets", description="Folder holding library.json, relative to the project file.")


class MusicSettings(Model):
    enabled: bool = True
    mood: Mood = "calm"


class Project(Versioned):
    id: Identifier = Field(pattern=ID_PATTERN)
    tenant_id: Identifier = Field(default="default", pattern=ID_PATTERN)
    title: str = Field(min_length=1)
    genre: str = ""
    visual_style: str = ""
    premise: str = Field(min_length=1)
    target_duration: TargetDuration
    render_profiles: dict[str, ProfileSettings] = Field(
        default_factory=lambda: {"preview_local": ProfileSettings()}
    )
    continuity_mode: Literal["strict"] = "strict"
    cost_policy: CostPolicy = CostPolicy()
    episode: Episode
    canon: Canon | str = Field(description="The canon inline, or a path to a Canon JSON file.")
    canon_diffs: tuple[CanonDiff, ...] = ()
    beats: tuple[Beat, ...] = Field(min_length=1)
    assets: AssetSettings = AssetSettings()
    music: MusicSettings = MusicSettings()

    @model_validator(mode="after")
    def _unique_beats(self) -> Project:
        seen: set[str] = set()
        for beat in self.beats:
            if beat.id in seen:
                raise ValueError(f"beat id {beat.id!r} appears twice; beat ids must be unique")
            seen.add(beat.id)
        return self
