"""RenderPackage v1 (spec §21): the only request a render service accepts, and its answer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.models.assets import AssetManifest
from pipeline.models.base import Model, Versioned
from pipeline.models.render import Profile, RenderPlan
from pipeline.models.shotlist import ShotList
from pipeline.models.summary import RunError, RunSummary

OutputName = Literal["video", "captions", "audio_stems", "run_summary"]


class PackageInputs(Model):
    """Each input is a URI or the artifact inline; never free text."""

    shotlist_ref: str | ShotList
    asset_manifest_ref: str | AssetManifest
    render_plan_ref: str | RenderPlan


class LoggingOptions(Model):
    trace_level: Literal["error", "warning", "info", "debug"] = "info"
    redact: tuple[str, ...] = ()


class RenderPackageRequest(Versioned):
    request_id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    idempotency_key: str = Field(min_length=1, max_length=200)
    tenant_id: str = Field(min_length=1)
    render_profile: Profile
    inputs: PackageInputs
    desired_outputs: tuple[OutputName, ...] = ("video", "captions", "run_summary")
    callbacks: tuple[str, ...] = ()
    logging_options: LoggingOptions = LoggingOptions()


class RenderPackageResponse(Versioned):
    request_id: str
    status: Literal["queued", "in_progress", "completed", "failed", "degraded"]
    artifact_uris: dict[str, str] = Field(default_factory=dict)
    lineage_hashes: dict[str, str] = Field(default_factory=dict)
    run_summary: RunSummary | None = None
    errors: tuple[RunError, ...] = ()
