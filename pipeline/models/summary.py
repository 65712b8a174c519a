"""The run summary (spec §16): what a run did, how long each stage took, what it reused.

Unlike artifacts it holds wall-clock figures, so it is written beside the outputs but never
hashed into anything.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt

from pipeline.models.base import Model, Versioned


class StageTiming(Model):
    stage: str
    seconds: float
    cache_hits: NonNegativeInt = 0
    cache_misses: NonNegativeInt = 0
    output_hash: str | None = None


class RunError(Model):
    code: str
    message: str
    stage: str
    recoverable: bool


class RunSummary(Versioned):
    SCHEMA_VERSION = "1.1.0"  # 1.1: run_id

    run_id: str | None = Field(default=None, description="The site run it summarises; None for `cinefleet render`.")
    project_id: str
    tenant_id: str
    site_id: str
    status: Literal["completed", "blocked", "failed"]
    stages: tuple[StageTiming, ...]
    cache_hits: NonNegativeInt
    cache_misses: NonNegativeInt
    cache_hit_rate: float = Field(ge=0, le=1)
    shots_rendered: NonNegativeInt
    shots_reused: NonNegativeInt
    local_jobs: NonNegativeInt
    external_jobs: NonNegativeInt = 0
    voice_mode: Literal["espeak-ng", "none"]
    workers: NonNegativeInt
    total_seconds: float
    errors: tuple[RunError, ...] = ()
    output_hash: str | None = Field(default=None, description="sha256 of RenderOutput.json.")
