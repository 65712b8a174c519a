"""Asset requirements, licences and the local library (spec §5.7, §9, §25)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from pipeline.models.base import Model, Versioned
from pipeline.models.canon import ID_PATTERN, Identifier
from pipeline.models.project import Emotion, Mood

LicenseType = Literal["CC0", "CC-BY", "commercial_licensed", "generated_local", "proprietary_cleared"]
AssetKind = Literal["background", "character", "prop"]


class License(Model):
    """Minimum rights metadata per asset (§25.2). A missing or unknown type is never used."""

    license_type: LicenseType
    attribution: str = ""
    purchase_record: str = ""
    provider_or_model: str = Field(min_length=1)
    retrieval_date: dt.date
    redistributable: bool = False


class LibraryAsset(Model):
    id: Identifier = Field(pattern=ID_PATTERN)
    kind: AssetKind
    file: str = Field(description="Image path relative to the library folder.")
    license: License | None = Field(description="Required; an asset without a known licence is rejected.")
    description: str = ""


class AssetLibrary(Versioned):
    """``library.json`` in an asset folder: what is there and under which licence."""

    assets: tuple[LibraryAsset, ...]


Source = Literal["library", "cache", "placeholder"]


class ResolvedAsset(Model):
    source: Source
    content_hash: str | None = Field(description="sha256 of the image; None for a placeholder.")
    license: License
    placeholder: bool
    flags: tuple[str, ...] = Field(default=(), description="Why a placeholder was used, e.g. 'missing'.")


class AssetRequirement(Model):
    asset_id: Identifier
    kind: AssetKind
    description: str
    shot_ids: tuple[Identifier, ...]
    resolved: ResolvedAsset


class VoiceLine(Model):
    line_id: Identifier
    speaker_id: Identifier
    text: str
    emotion: Emotion
    voice: str


class AssetManifest(Versioned):
    shotlist_hash: str
    assets: tuple[AssetRequirement, ...]
    vo_lines: tuple[VoiceLine, ...] = ()
    music_mood: Mood | None
    sfx: tuple[str, ...] = ()
