"""A media artifact is made only by the tool build its cache key names (issue 9: never mixed builds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.errors import MediaError
from pipeline.media.ffmpeg import build_id
from pipeline.steps import FileJob
from pipeline.workspace import Workspace

OTHER = "ffmpeg version 0.0-another-build"


def test_a_media_job_is_made_only_with_the_build_its_key_names(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "store", "t", "local")
    made: list[Path] = []

    def make(target: Path) -> None:
        made.append(target)
        target.write_bytes(b"a clip")

    planned_elsewhere = FileJob("shot", {"v": 1, "ffmpeg": OTHER}, make, kind="ShotClip", parents=(), suffix=".mp4",
                                builds={"ffmpeg": OTHER})
    with pytest.raises(MediaError) as refused:
        planned_elsewhere.run(ws)
    assert f"build {build_id()!r} differs from {OTHER!r}" in str(refused.value), str(refused.value)
    assert made == [] and ws.registry.artifacts("t") == [], "nothing made, nothing cached under the key"
    assert list((tmp_path / "store" / ".scratch").iterdir()) == []

    # A plan made here names this machine's build: it is made once, then found by its key.
    planned_here = dataclasses.replace(planned_elsewhere, material={"v": 1, "ffmpeg": build_id()},
                                       builds={"ffmpeg": build_id()})
    found, cached = planned_here.run(ws)
    assert not cached and len(made) == 1
    assert planned_here.run(ws) == (found, True) and len(made) == 1
    ws.close()
