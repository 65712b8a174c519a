"""The pipeline's documents, each a pydantic model exported as ``schemas/<Name>.schema.json``."""

from __future__ import annotations

from pipeline.models.assets import AssetLibrary, AssetManifest
from pipeline.models.base import Versioned
from pipeline.models.bundle import ProjectBundle
from pipeline.models.canon import Canon, CanonDiff
from pipeline.models.package import RenderPackageRequest, RenderPackageResponse
from pipeline.models.project import Episode, Project
from pipeline.models.render import RenderOutput, RenderPlan
from pipeline.models.script import Script
from pipeline.models.shotlist import ShotList
from pipeline.models.summary import RunSummary

#: Every top-level document by name; the name is its schema file's stem and its ``kind``.
DOCUMENTS: dict[str, type[Versioned]] = {
    cls.__name__: cls
    for cls in (
        Project,
        ProjectBundle,
        Canon,
        CanonDiff,
        Episode,
        Script,
        ShotList,
        AssetLibrary,
        AssetManifest,
        RenderPlan,
        RenderOutput,
        RunSummary,
        RenderPackageRequest,
        RenderPackageResponse,
    )
}

__all__ = [
    "DOCUMENTS",
    "AssetLibrary",
    "AssetManifest",
    "Canon",
    "CanonDiff",
    "Episode",
    "Project",
    "ProjectBundle",
    "RenderOutput",
    "RenderPackageRequest",
    "RenderPackageResponse",
    "RenderPlan",
    "RunSummary",
    "Script",
    "ShotList",
    "Versioned",
]
