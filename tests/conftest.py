"""Fixtures every suite shares; the harnesses behind them are package code (``*/testing.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.testing import pilot_project


@pytest.fixture
def pilot(tmp_path: Path) -> Path:
    """The pilot at test resolution, as a project file of its own."""
    return pilot_project(tmp_path / "pilot.json")
