"""The project as a run sees it: an immutable bundle of the project and every file it names."""

from __future__ import annotations

from pydantic import Field

from pipeline.models.base import Versioned


class ProjectBundle(Versioned):
    """What a run renders, by hash: the project, its canon and its asset library's files.

    A run carries the hash of this document instead of the project file's path, so editing
    the file (or its canon, or an asset) after submission changes nothing in that run, and a
    run can be rendered where the file never was.
    """

    project: str = Field(description="sha256 of the Project document, as written.")
    canon: str = Field(description="sha256 of the Canon document, inline in the project or read from its file.")
    library: str = Field(description="sha256 of the asset library's library.json.")
    files: dict[str, str] = Field(
        default_factory=dict,
        description="Each asset file the library names and holds, by its path relative to the library folder, "
        "to the sha256 of its bytes.",
    )
