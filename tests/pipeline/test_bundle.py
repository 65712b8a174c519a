"""Project bundles: what a run renders is what was read at submission, by hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.bundle import gather, open_bundle, put_bundle
from pipeline.documents import load_project
from pipeline.errors import InputError
from pipeline.models import ProjectBundle
from pipeline.testing import PILOT
from pipeline.workspace import Workspace


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(PILOT / "assets", folder / "assets")
    shutil.copy(PILOT / "project.json", folder / "project.json")
    return folder / "project.json"


def test_a_bundle_keeps_what_was_read_whatever_happens_to_the_files(project: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "store", "default", "local")
    try:
        first = put_bundle(ws, gather(load_project(project)))
        assert put_bundle(ws, gather(load_project(project))) == first, "same content, same bundle"
        document = ws.load_document(first, ProjectBundle)
        # The lantern has no licence: it is never used, so it is not stored either.
        assert set(document.files) == {"bg_lighthouse.png", "char_elias.png", "char_mara.png"}

        data = json.loads(project.read_text())
        original_line = data["beats"][0]["dialogue"][0]["text"]
        data["beats"][0]["dialogue"][0]["text"] = "Edited after submission."
        project.write_text(json.dumps(data))
        image = project.parent / "assets" / "bg_lighthouse.png"
        original_image = image.read_bytes()
        image.write_bytes(b"not an image any more")

        opened = open_bundle(ws, first)
        assert opened.project.beats[0].dialogue[0].text == original_line
        path = opened.library.files.get("bg_lighthouse")
        assert path is not None and path.read_bytes() == original_image
        assert put_bundle(ws, gather(load_project(project))) != first, "an edit makes another bundle"

        ws.path(document.files["char_mara.png"]).unlink()
        with pytest.raises(InputError, match=f"project bundle {first}: char_mara.png .* is not in the site's store"):
            open_bundle(ws, first)
    finally:
        ws.close()


def test_a_project_without_its_library_is_refused_before_anything_is_stored(project: Path) -> None:
    shutil.rmtree(project.parent / "assets")
    with pytest.raises(InputError, match=r"field 'assets\.library'.*library\.json"):
        gather(load_project(project))
