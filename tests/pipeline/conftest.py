"""Fixtures for render tests: the pilot project copied into a temporary folder at low resolution."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a copy of the pilot project; ``edit`` may change its JSON before it is written."""

    def make(edit: Callable[[dict[str, Any]], None] | None = None, name: str = "project.json",
             library: Path | None = None) -> Path:
        data = json.loads((PILOT / "project.json").read_text())
        data["render_profiles"] = TEST_PROFILE
        data["assets"] = {"library": str(library or PILOT / "assets")}
        if edit is not None:
            edit(data)
        path = tmp_path / "projects" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
        return path

    return make
