"""Fixtures for render tests: the pilot project copied into a temporary folder at low resolution."""

from __future__ import annotations

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
from pipeline.testing import PILOT, pilot_project


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


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a copy of the pilot project; ``edit`` may change its JSON before it is written."""

    def make(edit: Callable[[dict[str, Any]], None] | None = None, name: str = "project.json",
             library: Path | None = None) -> Path:
        return pilot_project(tmp_path / "projects" / name, edit, library)

    return make
