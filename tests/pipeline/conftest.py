"""Fixtures for render tests: the pilot project copied into a temporary folder at low resolution."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.canonical import digest
from pipeline.documents import load_project
from pipeline.models import ShotList
from pipeline.stages.canon_gate import apply_diffs
from pipeline.stages.script import generate_script
from pipeline.stages.shotlist import plan_shots

ROOT = Path(__file__).resolve().parents[2]
PILOT = ROOT / "examples" / "pilot"

#: Tests render at a quarter of the pixels; the code path is the same as at 1280x720.
TEST_PROFILE = {"preview_local": {"width": 640, "height": 360, "fps": 24}}


def require_espeak() -> None:
    """Voice is a feature: in CI its absence is a failure, locally a visible skip."""
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is not installed; scripts/setup installs it")
        pytest.skip("espeak-ng is not installed")


def pilot_shotlist(
    project_path: Path = PILOT / "project.json", edit: tuple[int, int, str] | None = None, fps: int = 24
) -> ShotList:
    """The pilot's shot list, optionally with one dialogue line edited (beat, line, new text)."""
    loaded = load_project(project_path)
    project = loaded.project
    if edit is not None:
        beat_index, line_index, text = edit
        beat = project.beats[beat_index]
        lines = list(beat.dialogue)
        lines[line_index] = lines[line_index].model_copy(update={"text": text})
        beats = list(project.beats)
        beats[beat_index] = beat.model_copy(update={"dialogue": tuple(lines)})
        project = project.model_copy(update={"beats": tuple(beats)})
    canon, _ = apply_diffs(loaded.canon, project.canon_diffs)
    script = generate_script(project, canon)
    return plan_shots(script, canon, fps, digest(script))


def write_project(path: Path, data: dict[str, Any], library: Path = PILOT / "assets") -> Path:
    """Write ``data`` as the project file ``path``, with a copy of ``library`` in its folder.

    A project's files must lie inside its folder, so the library is copied beside it (as a folder of
    the same name) rather than named by an absolute path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(library, path.parent / library.name, dirs_exist_ok=True)
    data["assets"] = {"library": library.name}
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a copy of the pilot project; ``edit`` may change its JSON before it is written."""

    def make(edit: Callable[[dict[str, Any]], None] | None = None, name: str = "project.json",
             library: Path | None = None) -> Path:
        data = json.loads((PILOT / "project.json").read_text())
        data["render_profiles"] = TEST_PROFILE
        if edit is not None:
            edit(data)
        return write_project(tmp_path / "projects" / name, data, library or PILOT / "assets")

    return make
