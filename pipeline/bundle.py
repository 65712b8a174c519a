"""A project and every file it names, stored once by hash, so that a run cannot change under its feet.

A run renders a :class:`~pipeline.models.ProjectBundle`, never the project file: the project,
its canon and its asset library's files are read once, at submission, put in the store, and
every stage opens them by the bundle's hash. An edit to the file afterwards (a dialogue line,
an asset) reaches only runs submitted after it, and a run can render where the file never was.
``cinefleet render`` goes through the same bundle, so both paths read the project one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from pipeline.documents import LoadedProject, describe_validation_error, open_regular
from pipeline.errors import InputError
from pipeline.models import AssetLibrary, Canon, Project, ProjectBundle
from pipeline.models.assets import LibraryAsset
from pipeline.models.project import Mood, ProfileSettings
from pipeline.stages.assets import LIBRARY_FILE, MAX_ASSET_BYTES, Library, open_library
from pipeline.store import uri_for
from pipeline.workspace import Workspace


@dataclass(frozen=True)
class Gathered:
    """Everything a bundle holds, read and checked, in memory: nothing is stored yet.

    Each file is read once and stored from the same bytes, so what the bundle names by hash is
    exactly what was checked, even if the file is being rewritten meanwhile.
    """

    loaded: LoadedProject
    library: bytes
    files: dict[str, tuple[bytes, LibraryAsset]]


def gather(loaded: LoadedProject) -> Gathered:
    """Read the project's library and the files it names; raises :class:`InputError` on bad input."""
    checked = open_library(loaded.library, "assets.library", loaded.path)
    index = loaded.library / LIBRARY_FILE
    raw = index.read_bytes()
    try:
        library = AssetLibrary.model_validate_json(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(index, exc)) from None
    if {a.id for a in library.assets} != set(checked.entries):
        raise InputError(f"{index}: changed while it was read; submit again")
    files: dict[str, tuple[bytes, LibraryAsset]] = {}
    for asset in library.assets:
        # An asset without a licence is never used, and a missing file stays missing: neither is
        # stored, and the manifest flags them as it would reading the folder.
        if asset.license is None or asset.file in files:
            continue
        try:  # the path open_library confined to the project's folder, read as it checked it
            with open_regular(checked.files[asset.id], MAX_ASSET_BYTES, f"{index}: asset {asset.id!r}") as handle:
                files[asset.file] = (handle.read(), asset)
        except FileNotFoundError:
            continue
    return Gathered(loaded=loaded, library=raw, files=files)


def put_bundle(ws: Workspace, gathered: Gathered) -> str:
    """Store the gathered project and files; returns the bundle's hash (the same for the same content).

    Everything is stored for ``ws.tenant_id``, the tenant who submits; a project file claiming
    another tenant is stored saying the submitter's, so nothing of the run names the other.
    """
    project = gathered.loaded.project
    if project.tenant_id != ws.tenant_id:
        project = project.model_copy(update={"tenant_id": ws.tenant_id})
    project_hash = ws.put_document(project, parents=[])
    canon_hash = ws.put_document(gathered.loaded.canon, parents=[project_hash])
    library_hash = ws.put_bytes(gathered.library, "AssetLibrary", parents=[],
                                schema_version=AssetLibrary.model_validate_json(gathered.library).schema_version)
    files = {}
    for name, (data, asset) in gathered.files.items():
        # Recorded as the manifest stage records an imported library image, so the registry reads
        # the same whether or not the image was bundled first.
        found = ws.store.put_bytes(ws.tenant_id, data)
        ws.registry.record_artifact(tenant_id=ws.tenant_id, site_id=ws.site_id, digest=found, kind="Image",
                                    size=len(data), parents=[], params={"asset_id": asset.id},
                                    license=asset.license.model_dump(mode="json") if asset.license else None)
        files[name] = found
    bundle = ProjectBundle.create(project=project_hash, canon=canon_hash, library=library_hash, files=files)
    return ws.put_document(bundle, parents=[project_hash, canon_hash, library_hash, *sorted(set(files.values()))])


@dataclass(frozen=True)
class Bundle:
    """An opened bundle: the project, its canon and its library, all read from the store."""

    hash: str
    project: Project
    canon: Canon
    library: Library

    def settings(self, profile: str) -> ProfileSettings:
        return self.project.render_profiles.get(profile, ProfileSettings())

    @property
    def music(self) -> Mood | None:
        return self.project.music.mood if self.project.music.enabled else None


def open_bundle(ws: Workspace, bundle_hash: str) -> Bundle:
    """Read a bundle by hash; raises :class:`InputError` naming what the store lacks."""

    def blob(what: str, found: str) -> str:
        if not ws.has(found):
            raise InputError(f"project bundle {bundle_hash}: {what} {found} is not in the site's store")
        return found

    bundle = ws.load_document(blob("bundle", bundle_hash), ProjectBundle)
    library = ws.load_document(blob("library.json", bundle.library), AssetLibrary)
    stored = {name: ws.path(blob(name, found)) for name, found in bundle.files.items()}
    files = {asset.id: stored[asset.file] for asset in library.assets if asset.file in stored}
    return Bundle(
        hash=bundle_hash,
        project=ws.load_document(blob("project", bundle.project), Project),
        canon=ws.load_document(blob("canon", bundle.canon), Canon),
        library=Library(folder=Path(uri_for(bundle.library)), entries={a.id: a for a in library.assets},
                        files=files),
    )


def bundle_project(ws: Workspace, gathered: Gathered) -> Bundle:
    """Store and reopen: what a run renders is what the store holds, on every path alike."""
    return open_bundle(ws, put_bundle(ws, gathered))

