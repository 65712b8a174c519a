"""A damaged store never ships wrong bytes: flipped or truncated blobs are rebuilt, not reused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.models import RenderOutput
from pipeline.registry import ArtifactRow, Registry, sqlite_url
from pipeline.render import RenderRequest, render
from pipeline.store import file_sha256
from pipeline.testing import pilot_project
from pipeline.workspace import REGISTRY_FILE
from tests.pipeline.conftest import require_espeak


def _render(project: Path, out: Path, store: Path) -> dict[str, str]:
    result = render(RenderRequest(project=project, out=out, store=store))
    assert result.blocked is None, result.blocked
    return {name: file_sha256(out / name) for name in ("episode.mp4", "RenderOutput.json")}


def _blobs(store: Path, kind: str) -> list[Path]:
    registry = Registry(sqlite_url(store / REGISTRY_FILE))
    try:
        with Session(registry.engine) as session:
            rows = session.scalars(select(ArtifactRow).where(ArtifactRow.kind == kind).order_by(ArtifactRow.hash))
            return [store / row.tenant_id / row.hash[:2] / row.hash for row in rows]
    finally:
        registry.close()


def test_flipped_and_truncated_blobs_are_rebuilt_with_the_same_bytes(tmp_path: Path) -> None:
    require_espeak()
    project = pilot_project(tmp_path / "project.json")
    store = tmp_path / "store"
    clean = _render(project, tmp_path / "clean", store)

    clips = _blobs(store, "ShotClip")
    episode = json.loads((tmp_path / "clean" / "RenderOutput.json").read_text())["video"]["sha256"]
    episode_blob = next(store.glob(f"*/{episode[:2]}/{episode}"))
    for blob in (clips[0], episode_blob):  # a flipped byte in the middle
        data_ = bytearray(blob.read_bytes())
        data_[len(data_) // 2] ^= 0x01
        blob.write_bytes(bytes(data_))
    clips[1].write_bytes(clips[1].read_bytes()[:1000])  # truncated

    again = _render(project, tmp_path / "again", store)
    assert again == clean, "the damaged blobs were rebuilt, not shipped"
    output = RenderOutput.model_validate_json((tmp_path / "again" / "RenderOutput.json").read_bytes())
    assert output.video.sha256 == file_sha256(tmp_path / "again" / "episode.mp4")
    assert len([p for p in (store / ".quarantine").rglob("*") if p.is_file()]) == 3

    check = subprocess.run([sys.executable, "-m", "cinefleet", "store", "verify", str(store), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["damaged"] == []

    shutil.copyfile(clips[2], tmp_path / "clip")
    clips[2].write_bytes(b"not a clip")
    check = subprocess.run([sys.executable, "-m", "cinefleet", "store", "verify", str(store)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and str(clips[2]) in check.stderr and "1 damaged" in check.stdout
    assert not clips[2].exists(), "verify quarantines what it finds damaged"
