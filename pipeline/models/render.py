"""RenderPlan and RenderOutput (spec §5.8, §5.9, §11).

The plan maps the manifest onto concrete sources for one profile; the profile changes only the
plan, never the script or the shot list.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline.models.base import Model, Versioned
from pipeline.models.canon import Identifier
from pipeline.models.project import Mood

Profile = Literal["preview_local", "standard_local", "hq_providerX"]
ShotKind = Literal["still", "ken_burns"]


class Motion(Model):
    zoom_from: float = Field(default=1.0, ge=1.0, le=2.0)
    zoom_to: float = Field(default=1.0, ge=1.0, le=2.0)
    pan_x: float = Field(default=0.0, ge=-1.0, le=1.0)
    pan_y: float = Field(default=0.0, ge=-1.0, le=1.0)


class PlannedShot(Model):
    shot_id: Identifier
    frames: PositiveInt
    kind: ShotKind
    asset_id: Identifier
    asset_uri: str | None = Field(description="cas:// URI of the image, or None when a card is drawn.")
    fallback: Literal["placeholder_card"] = "placeholder_card"
    card_lines: tuple[str, ...] = Field(default=(), description="Text drawn when the card is used.")
    motion: Motion = Motion()
    fade_in: NonNegativeInt = 0
    fade_out: NonNegativeInt = 0


class AudioPlan(Model):
    voice_engine: str = Field(description="'espeak-ng <version>' or 'none' (no-voice mode).")
    music_mood: Mood | None
    target_lufs: float = -16.0
    true_peak_db: float = -1.5
    duck_db: float = -12.0


class RenderPlan(Versioned):
    profile: Profile
    width: PositiveInt
    height: PositiveInt
    fps: PositiveInt
    timing_lock_hash: str
    shotlist_hash: str
    manifest_hash: str
    ffmpeg_build: str
    shots: tuple[PlannedShot, ...] = Field(min_length=1)
    audio: AudioPlan


class OutputFile(Model):
    uri: str
    sha256: str
    bytes: NonNegativeInt


class GateResult(Model):
    gate: str
    passed: bool
    rule: str
    facts: str


class RenderOutput(Versioned):
    project_id: str
    tenant_id: str
    site_id: str
    profile: Profile
    video: OutputFile
    captions: OutputFile
    audio: OutputFile
    frames: PositiveInt
    audio_samples: PositiveInt
    duration_s: float
    lineage: dict[str, str] = Field(description="Artifact kind → sha256 of every parent artifact.")
    qa: tuple[GateResult, ...]
    placeholders: tuple[Identifier, ...] = ()
    voice_engine: str
    ffmpeg_build: str
    compute_origin: Literal["local", "external"] = "local"
