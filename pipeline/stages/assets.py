"""ShotList → AssetManifest: what the episode needs, and where each piece comes from (spec §9, §25).

Resolution order: the project's local library, then the site's asset cache, then a placeholder
card. An asset is only ever used with a known licence; one whose licence is missing is
rejected and treated as absent. A placeholder is flagged, never silent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.documents import load_document
from pipeline.errors import InputError
from pipeline.models import AssetLibrary, AssetManifest, Canon, Script, ShotList
from pipeline.models.assets import AssetKind, AssetRequirement, LibraryAsset, License, ResolvedAsset, VoiceLine
from pipeline.models.project import Mood

LIBRARY_FILE = "library.json"

#: The licence a drawn placeholder card carries: the pipeline made it, nobody else has a claim.
PLACEHOLDER_LICENSE = License(
    license_type="generated_local",
    provider_or_model="cinefleet placeholder card",
    retrieval_date=dt.date(2026, 1, 1),
    redistributable=True,
)

ImportImage = Callable[[str, Path, License], str]
CachedAsset = Callable[[str], tuple[str, License] | None]


@dataclass(frozen=True)
class Library:
    folder: Path
    entries: dict[str, LibraryAsset]
    #: Where each named file is read from when the library comes from a project bundle (blobs in
    #: the store, so an edit to the folder cannot reach a submitted run); None reads the folder.
    files: Mapping[str, Path] | None = None

    def file(self, name: str) -> Path | None:
        if self.files is None:
            return self.folder / name
        return self.files.get(name)


def open_library(folder: Path, field: str, project_file: Path) -> Library:
    """Read ``library.json``; a library the project names but that is not there is bad input."""
    index = folder / LIBRARY_FILE
    if not index.is_file():
        raise InputError(
            f"{project_file}: field '{field}': value {str(folder)!r}: expected a folder holding {LIBRARY_FILE} "
            f"({index} does not exist)"
        )
    library = load_document(index, AssetLibrary)
    entries: dict[str, LibraryAsset] = {}
    for position, asset in enumerate(library.assets):
        if asset.id in entries:
            raise InputError(f"{index}: field 'assets[{position}].id': value {asset.id!r}: expected a unique asset id")
        entries[asset.id] = asset
    return Library(folder=folder, entries=entries)


def _library_image(library: Library, asset_id: str) -> tuple[Path | None, License | None, str | None]:
    """The image and licence the library offers, or why it cannot be used."""
    entry = library.entries.get(asset_id)
    if entry is None:
        return None, None, "missing"
    if entry.license is None:
        return None, None, "unknown_license"
    path = library.file(entry.file)
    if path is None:
        return None, None, "file_missing"
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return None, None, "file_missing"
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        return None, None, "unreadable"
    return path, entry.license, None


def _resolve(asset_id: str, library: Library, import_image: ImportImage, cached: CachedAsset) -> ResolvedAsset:
    path, license, problem = _library_image(library, asset_id)
    if path is not None and license is not None:
        return ResolvedAsset(source="library", content_hash=import_image(asset_id, path, license), license=license,
                             placeholder=False)
    hit = cached(asset_id)
    if hit is not None:
        digest, license = hit
        return ResolvedAsset(source="cache", content_hash=digest, license=license, placeholder=False,
                             flags=(f"library:{problem}",))
    return ResolvedAsset(source="placeholder", content_hash=None, license=PLACEHOLDER_LICENSE, placeholder=True,
                         flags=(problem or "missing",))


def _describe(asset_id: str, kind: AssetKind, canon: Canon) -> str:
    for character in canon.characters:
        if character.portrait_asset == asset_id:
            return f"portrait of {character.name}" + (f": {character.description}" if character.description else "")
    for location in canon.locations:
        if location.background_asset == asset_id:
            return f"{location.name}" + (f": {location.description}" if location.description else "")
    return f"{kind} {asset_id}"


def build_manifest(
    shotlist: ShotList,
    shotlist_hash: str,
    script: Script,
    canon: Canon,
    library: Library,
    import_image: ImportImage,
    cached: CachedAsset,
    music_mood: Mood | None,
) -> AssetManifest:
    needs: dict[str, tuple[AssetKind, list[str]]] = {}
    for shot in shotlist.shots:
        kind: AssetKind = "character" if shot.template == "closeup" else "background"
        needs.setdefault(shot.visual_asset, (kind, []))[1].append(shot.shot_id)
    requirements = tuple(
        AssetRequirement(
            asset_id=asset_id,
            kind=kind,
            description=_describe(asset_id, kind, canon),
            shot_ids=tuple(shot_ids),
            resolved=_resolve(asset_id, library, import_image, cached),
        )
        for asset_id, (kind, shot_ids) in sorted(needs.items())
    )
    vo_lines = tuple(
        VoiceLine(
            line_id=line.line_id,
            speaker_id=line.speaker_id,
            text=line.text,
            emotion=line.emotion,
            voice=(character.voice if (character := canon.character(line.speaker_id)) else "en"),
        )
        for scene in script.scenes
        for line in scene.dialogue
    )
    return AssetManifest.create(
        shotlist_hash=shotlist_hash, assets=requirements, vo_lines=vo_lines, music_mood=music_mood
    )
