"""ShotList → AssetManifest: what the episode needs, and where each piece comes from (spec §9, §25).

Resolution order: the project's local library, then the site's asset cache, then a placeholder
card. An asset is only ever used with a known licence; one whose licence is missing is
rejected and treated as absent. A placeholder is flagged, never silent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.documents import confine, load_document, open_regular
from pipeline.errors import InputError, MediaError
from pipeline.media.stills import open_capped
from pipeline.models import AssetLibrary, AssetManifest, Canon, Script, ShotList
from pipeline.models.assets import AssetKind, AssetRequirement, LibraryAsset, License, ResolvedAsset, VoiceLine
from pipeline.models.project import Mood

LIBRARY_FILE = "library.json"
#: Largest image file a library may offer; real stills for a 1280x720 episode are a few MB.
MAX_ASSET_BYTES = 64 * 1024 * 1024

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
    """A checked asset library: its entries, and each entry's file resolved inside the project's folder."""

    folder: Path
    entries: dict[str, LibraryAsset]
    #: Asset id → the file to read: inside the project's folder when read from it, or a blob in the
    #: store when the library comes from a project bundle (so an edit to the folder cannot reach a
    #: submitted run). An entry without one is missing.
    files: Mapping[str, Path] = dataclasses.field(default_factory=dict)


def open_library(folder: Path, field: str, project_file: Path) -> Library:
    """Read ``library.json`` and check every file it names, before anything is rendered.

    A library the project names but that is not there is bad input. A library is untrusted: each
    entry's file must resolve inside the project's folder, be a regular file of at most
    ``MAX_ASSET_BYTES`` and, if it is an image, have at most ``stills.MAX_ASSET_PIXELS`` pixels by its header
    (a small PNG can claim 13000x13000 and take gigabytes to decode). A file that is missing or not an
    image is left to the manifest, which flags it and draws a placeholder.
    """
    root = project_file.resolve().parent
    index = confine(project_file, field, str(folder / LIBRARY_FILE), folder, root)
    if not index.exists():
        raise InputError(
            f"{project_file}: field '{field}': value {str(folder)!r}: expected a folder holding {LIBRARY_FILE} "
            f"({index} does not exist)"
        )
    library = load_document(index, AssetLibrary)
    entries: dict[str, LibraryAsset] = {}
    files: dict[str, Path] = {}
    owner = f"{index} (the asset library of {project_file})"
    for position, asset in enumerate(library.assets):
        if asset.id in entries:
            raise InputError(f"{index}: field 'assets[{position}].id': value {asset.id!r}: expected a unique asset id")
        entries[asset.id] = asset
        files[asset.id] = confine(owner, f"assets[{position}].file", asset.file, folder, root)
        _check_image(files[asset.id], f"{owner}: field 'assets[{position}].file': value {asset.file!r} "
                                      f"(asset {asset.id!r})")
    return Library(folder=folder, entries=entries, files=files)


def _check_image(path: Path, where: str) -> None:
    """Refuse a file that is not regular, too large, or an image of too many pixels (read from its header)."""
    try:
        handle = open_regular(path, MAX_ASSET_BYTES, where)
    except FileNotFoundError:
        return
    with handle:
        try:
            with open_capped(handle):  # parses the header only; pixels are decoded on load()
                pass
        except MediaError as exc:
            raise InputError(f"{where}: {path}: {exc}") from None
        except (OSError, SyntaxError, ValueError):  # not an image: a placeholder, flagged
            return


def _library_image(library: Library, asset_id: str) -> tuple[Path | None, License | None, str | None]:
    """The image and licence the library offers, or why it cannot be used."""
    entry = library.entries.get(asset_id)
    if entry is None:
        return None, None, "missing"
    if entry.license is None:
        return None, None, "unknown_license"
    path = library.files.get(asset_id)
    if path is None:
        return None, None, "file_missing"
    try:
        # Opened as open_library checked it: a file swapped for a FIFO since is refused, never waited on.
        with open_regular(path, MAX_ASSET_BYTES, f"asset {asset_id!r}") as handle, open_capped(handle) as image:
            image.verify()
    except FileNotFoundError:
        return None, None, "file_missing"
    except MediaError as exc:
        raise InputError(f"asset {asset_id!r}: {path}: {exc}") from None
    except (OSError, SyntaxError, ValueError):
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
