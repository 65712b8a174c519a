"""The ShotList (spec §5.6): the film-ready breakdown whose timing is locked.

Durations are integer frame counts so the timeline never drifts; ``timing_lock_hash`` pins
them, and every later render must honour it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline.models.base import Model, Versioned
from pipeline.models.canon import ID_PATTERN, Identifier
from pipeline.models.project import Mood

ShotTemplate = Literal["establishing", "closeup", "two_shot", "insert"]
Movement = Literal["static", "push_in", "pull_out", "pan_left", "pan_right"]


class ShotLine(Model):
    """A dialogue line placed in its shot, in shot-local frames."""

    line_id: Identifier
    speaker_id: Identifier
    text: str
    start_frame: NonNegativeInt
    end_frame: PositiveInt


class AudioIntent(Model):
    vo_refs: tuple[Identifier, ...] = ()
    sfx_tags: tuple[str, ...] = ()
    music_mood: Mood


class Shot(Model):
    shot_id: Identifier = Field(pattern=ID_PATTERN)
    scene_id: Identifier
    template: ShotTemplate
    frames: PositiveInt
    framing: str
    movement: Movement
    characters: tuple[Identifier, ...] = ()
    expressions: tuple[str, ...] = ()
    environment_notes: str = ""
    action_beats: tuple[str, ...] = ()
    lines: tuple[ShotLine, ...] = ()
    audio: AudioIntent
    visual_asset: Identifier = Field(description="The asset this shot shows.")
    caption_card: tuple[str, ...] = Field(default=(), description="Title text for a card shot.")


class ShotList(Versioned):
    script_hash: str
    fps: PositiveInt
    shots: tuple[Shot, ...] = Field(min_length=1)
    total_frames: PositiveInt
    timing_lock_hash: str = Field(description="sha256 over fps and each shot's id and frame count.")
