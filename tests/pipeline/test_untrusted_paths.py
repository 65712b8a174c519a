"""Project files are untrusted: their paths stay inside the project's folder, their files are regular and sane."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline.documents import confine, load_project
from pipeline.errors import InputError, MediaError
from pipeline.media import stills
from pipeline.stages.assets import _library_image, open_library
from pipeline.testing import PILOT


@pytest.fixture
def pilot_copy(tmp_path: Path) -> Path:
    """A copy of the pilot's folder (project, external canon, asset library)."""
    folder = tmp_path / "pilot"
    shutil.copytree(PILOT, folder)
    return folder


def test_paths_inside_the_folder_are_accepted_however_they_are_spelled(pilot_copy: Path) -> None:
    project = pilot_copy / "project.json"
    folder = pilot_copy.resolve()
    assert confine(project, "canon", "canon.json", folder, folder) == folder / "canon.json"
    assert confine(project, "canon", "assets/../canon.json", folder, folder) == folder / "canon.json"
    assert confine(project, "canon", str(folder / "canon.json"), folder, folder) == folder / "canon.json"
    # A symlink that stays inside is followed
    (pilot_copy / "same.json").symlink_to("canon.json")
    assert confine(project, "canon", "same.json", folder, folder) == folder / "canon.json"


@pytest.mark.parametrize("value", ["../outside.json", "/etc/passwd", "assets/../../outside.json", "link.json"])
def test_paths_that_leave_the_folder_are_refused_naming_file_field_and_value(value: str, pilot_copy: Path) -> None:
    (pilot_copy.parent / "outside.json").write_text("{}")
    (pilot_copy / "link.json").symlink_to(pilot_copy.parent / "outside.json")
    folder = pilot_copy.resolve()
    with pytest.raises(InputError) as refused:
        confine(pilot_copy / "project.json", "canon", value, folder, folder)
    message = str(refused.value)
    assert message.startswith(f"{pilot_copy / 'project.json'}: field 'canon': value {json.dumps(value)}")
    assert "expected a path inside the project's folder" in message


def test_a_project_reached_through_a_symlink_is_confined_to_its_real_folder(pilot_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "project.json").symlink_to(pilot_copy / "project-external-canon.json")
    loaded = load_project(elsewhere / "project.json")
    assert loaded.folder == pilot_copy.resolve() and loaded.library == pilot_copy.resolve() / "assets"


def test_the_library_resolves_every_entry_inside_the_folder(pilot_copy: Path) -> None:
    loaded = load_project(pilot_copy / "project.json")
    library = open_library(loaded.library, "assets.library", loaded.path)
    assert set(library.files) == set(library.entries)
    assert all(path.parent == pilot_copy.resolve() / "assets" for path in library.files.values())


def test_an_asset_swapped_for_a_fifo_after_the_check_is_refused_not_waited_on(pilot_copy: Path) -> None:
    loaded = load_project(pilot_copy / "project.json")
    library = open_library(loaded.library, "assets.library", loaded.path)
    picture = library.files["char_mara"]
    picture.unlink()
    os.mkfifo(picture)
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(lambda: _library_image(library, "char_mara"))),
                              daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "reading the asset blocked on a FIFO"
    assert isinstance(outcome[0], InputError) and "is a FIFO" in str(outcome[0])


def _catch(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:  # the test inspects what was raised
        return exc


def test_a_missing_or_unreadable_asset_is_still_a_flagged_placeholder(pilot_copy: Path) -> None:
    (pilot_copy / "assets" / "char_mara.png").unlink()
    (pilot_copy / "assets" / "char_elias.png").write_bytes(b"not an image")
    loaded = load_project(pilot_copy / "project.json")
    library = open_library(loaded.library, "assets.library", loaded.path)
    assert _library_image(library, "char_mara")[2] == "file_missing"
    assert _library_image(library, "char_elias")[2] == "unreadable"


def test_cover_image_refuses_too_many_pixels_before_decoding(tmp_path: Path) -> None:
    source = tmp_path / "wide.png"
    Image.new("1", (stills.MAX_ASSET_PIXELS // 1000 + 1, 1000)).save(source)
    with pytest.raises(MediaError, match=rf"wide.png: cannot read image: .* expected an image of at most "
                                         rf"{stills.MAX_ASSET_PIXELS} pixels"):
        stills.cover_image(source, 64, 36, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
