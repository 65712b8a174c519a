"""End-to-end renders of the pilot with real ffmpeg: determinism, caching, resume, fallbacks, gates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import InputError, MediaError
from pipeline.media import probe
from pipeline.models import AssetManifest, RenderOutput, RunSummary
from pipeline.render import PUBLISHED, RenderRequest, render
from pipeline.store import file_sha256
from pipeline.testing import PILOT, write_project
from tests.pipeline.conftest import require_espeak

ARTIFACTS = ("Script.json", "ShotList.json", "AssetManifest.json", "RenderPlan.json", "RenderOutput.json",
             "episode.mp4", "captions.srt")


def _render(project: Path, out: Path, store: Path, workers: int = 2) -> RunSummary:
    result = render(RenderRequest(project=project, out=out, store=store, workers=workers))
    assert result.blocked is None, result.blocked
    return result.summary


def _hashes(out: Path) -> dict[str, str]:
    return {name: file_sha256(out / name) for name in ARTIFACTS}


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One clean render of the pilot, shared by the tests that compare against it."""
    require_espeak()
    base = tmp_path_factory.mktemp("golden")
    data = json.loads((PILOT / "project.json").read_text())
    data["render_profiles"] = {"preview_local": {"width": 640, "height": 360, "fps": 24}}
    project = write_project(base / "project.json", data)
    summary = _render(project, base / "out", base / "store")
    return {"project": project, "out": base / "out", "store": base / "store", "summary": summary,
            "hashes": _hashes(base / "out")}


def test_golden_render_is_bit_identical_in_a_fresh_store(golden: dict[str, Any], tmp_path: Path) -> None:
    summary = _render(golden["project"], tmp_path / "out", tmp_path / "store", workers=1)
    assert _hashes(tmp_path / "out") == golden["hashes"], "same inputs, same bytes, whatever the worker count"
    assert summary.shots_reused == 0 and golden["summary"].shots_reused == 0


def test_warm_store_gives_the_same_bytes_and_reuses_everything(golden: dict[str, Any], tmp_path: Path) -> None:
    summary = _render(golden["project"], tmp_path / "out", golden["store"])
    assert _hashes(tmp_path / "out") == golden["hashes"]
    assert summary.shots_rendered == 0 and summary.shots_reused == golden["summary"].shots_rendered
    media = {stage.stage: stage for stage in summary.stages}["media"]
    assert media.cache_misses == 0


def test_frame_and_sample_counts_match_the_timeline(golden: dict[str, Any]) -> None:
    out = golden["out"]
    shotlist = json.loads((out / "ShotList.json").read_text())
    frames = sum(shot["frames"] for shot in shotlist["shots"])
    assert probe.count_video_frames(out / "episode.mp4") == frames == shotlist["total_frames"]
    assert probe.audio_sample_count(out / "episode.mp4") == frames * 2000
    output = RenderOutput.model_validate_json((out / "RenderOutput.json").read_text())
    assert output.frames == frames and output.audio_samples == frames * 2000
    assert all(gate.passed for gate in output.qa)
    assert {gate.gate for gate in output.qa} >= {"runtime", "caption_sync", "loudness", "missing_assets", "rights"}
    assert output.video.sha256 == golden["hashes"]["episode.mp4"]


def test_every_published_file_is_there(golden: dict[str, Any]) -> None:
    assert sorted(p.name for p in golden["out"].iterdir()) == sorted(PUBLISHED)
    summary = json.loads((golden["out"] / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["voice_mode"] == "espeak-ng"
    assert {s["stage"] for s in summary["stages"]} >= {"script", "canon_gate", "shotlist", "media", "assemble"}


def test_missing_asset_becomes_a_flagged_placeholder(golden: dict[str, Any]) -> None:
    manifest = AssetManifest.model_validate_json((golden["out"] / "AssetManifest.json").read_text())
    placeholders = {a.asset_id: a.resolved for a in manifest.assets if a.resolved.placeholder}
    assert "bg_harbour" in placeholders and placeholders["bg_harbour"].flags == ("missing",)
    output = RenderOutput.model_validate_json((golden["out"] / "RenderOutput.json").read_text())
    assert "bg_harbour" in output.placeholders


def test_unknown_licence_is_rejected_never_used(make_project: Callable[..., Path], tmp_path: Path) -> None:
    def unknown(assets: list[dict[str, Any]]) -> None:
        next(a for a in assets if a["id"] == "char_mara")["license"] = None

    project = make_project(library=_library_copy(tmp_path, unknown))
    _render(project, tmp_path / "out", tmp_path / "store")
    manifest = AssetManifest.model_validate_json((tmp_path / "out" / "AssetManifest.json").read_text())
    mara = next(a for a in manifest.assets if a.asset_id == "char_mara")
    assert mara.resolved.placeholder and mara.resolved.flags == ("unknown_license",)
    assert mara.resolved.content_hash is None


def test_editing_one_line_rerenders_only_that_shot(golden: dict[str, Any], tmp_path: Path) -> None:
    data = json.loads(golden["project"].read_text())
    data["beats"][1]["dialogue"][0]["text"] = "Gull Point, this is Saltmarsh. Two boats are still out."
    project = write_project(tmp_path / "edited.json", data)
    store = tmp_path / "store"
    shutil.copytree(golden["store"], store)
    summary = _render(project, tmp_path / "out", store)
    assert summary.shots_rendered == 1 and summary.shots_reused == golden["summary"].shots_rendered - 1
    stages = {stage.stage: stage for stage in summary.stages}
    assert stages["assemble"].cache_misses == 1
    old = json.loads((golden["out"] / "ShotList.json").read_text())["shots"]
    new = json.loads((tmp_path / "out" / "ShotList.json").read_text())["shots"]
    assert [a["shot_id"] for a, b in zip(old, new, strict=True) if a != b] == ["harbour-radio-l1"]


def test_interrupted_render_resumes_and_reuses_finished_shots(golden: dict[str, Any], tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    command = [sys.executable, "-m", "cinefleet", "render", str(golden["project"]), "--out", str(out),
               "--store", str(store), "--workers", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stderr is not None
    finished = 0
    for line in process.stderr:
        if line.startswith("[shot") and "rendered" in line:
            finished += 1
            if finished == 3:
                os.killpg(process.pid, signal.SIGKILL)
                break
    process.wait(timeout=60)
    process.stderr.close()
    assert finished == 3 and process.returncode == -signal.SIGKILL
    assert not (out / "episode.mp4").exists()

    summary = _render(golden["project"], out, store)
    assert summary.shots_reused >= 3
    assert summary.shots_reused + summary.shots_rendered == golden["summary"].shots_rendered
    assert _hashes(out) == golden["hashes"], "a resumed render gives the same bytes as a clean one"


def _cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False, env=env)


def test_canon_contradiction_exits_3_without_an_episode(make_project: Callable[..., Path], tmp_path: Path) -> None:
    def contradict(data: dict[str, Any]) -> None:
        data["beats"][0]["dialogue"][0]["speaker_name"] = "Elias Crowe"

    out = tmp_path / "out"
    result = _cli("render", make_project(contradict), "--out", out, "--store", tmp_path / "store")
    assert result.returncode == 3, result.stderr
    assert "canon" in result.stderr and "name" in result.stderr
    assert "Elias Crowe" in result.stderr and "Elias Crane" in result.stderr
    assert not (out / "episode.mp4").exists()
    assert json.loads((out / "run_summary.json").read_text())["status"] == "blocked"


def test_failed_qa_gate_exits_3_and_withdraws_a_stale_episode(golden: dict[str, Any], tmp_path: Path) -> None:
    data = json.loads(golden["project"].read_text())
    data["target_duration"] = {"seconds": 600, "tolerance": 0.1}
    project = write_project(tmp_path / "long.json", data)
    out = tmp_path / "out"
    shutil.copytree(golden["out"], out)
    result = _cli("render", project, "--out", out, "--store", golden["store"])
    assert result.returncode == 3, result.stderr
    assert "runtime" in result.stderr and "target window" in result.stderr
    assert not (out / "episode.mp4").exists()


def test_no_voice_mode_still_captions(make_project: Callable[..., Path], tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty-path")}
    out = tmp_path / "out"
    result = _cli("render", make_project(), "--out", out, "--store", tmp_path / "store", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["voice_mode"] == "none"
    plan = json.loads((out / "RenderPlan.json").read_text())
    assert plan["audio"]["voice_engine"] == "none"
    assert (out / "captions.srt").read_text().count("-->") >= 5


def _library_copy(tmp_path: Path, change: Callable[[list[dict[str, Any]]], None]) -> Path:
    library = tmp_path / "library"
    shutil.copytree(PILOT / "assets", library)
    index = json.loads((library / "library.json").read_text())
    change(index["assets"])
    (library / "library.json").write_text(json.dumps(index))
    return library


def test_asset_gone_from_the_library_comes_from_the_cache(golden: dict[str, Any], tmp_path: Path) -> None:
    library = _library_copy(tmp_path, lambda assets: assets.remove(next(a for a in assets if a["id"] == "char_mara")))
    data = json.loads(golden["project"].read_text())
    data["assets"] = {"library": str(library)}
    project = tmp_path / "project.json"  # the library copy is inside the project's folder
    project.write_text(json.dumps(data))
    store = tmp_path / "store"
    shutil.copytree(golden["store"], store)
    summary = _render(project, tmp_path / "out", store)
    manifest = AssetManifest.model_validate_json((tmp_path / "out" / "AssetManifest.json").read_text())
    mara = next(a for a in manifest.assets if a.asset_id == "char_mara").resolved
    assert (mara.source, mara.placeholder, mara.flags) == ("cache", False, ("library:missing",))
    assert summary.shots_rendered == 0, "the cached image is the same image: every shot is reused"
    assert file_sha256(tmp_path / "out" / "episode.mp4") == golden["hashes"]["episode.mp4"]


def test_incomplete_licence_metadata_blocks_publishing(golden: dict[str, Any], tmp_path: Path) -> None:
    def cc_by_without_attribution(assets: list[dict[str, Any]]) -> None:
        for asset in assets:
            if asset["id"] == "bg_lighthouse":
                asset["license"]["license_type"] = "CC-BY"
                asset["license"]["attribution"] = ""

    data = json.loads(golden["project"].read_text())
    data["assets"] = {"library": str(_library_copy(tmp_path, cc_by_without_attribution))}
    project = tmp_path / "project.json"  # the library copy is inside the project's folder
    project.write_text(json.dumps(data))
    out = tmp_path / "out"
    result = _cli("render", project, "--out", out, "--store", golden["store"])
    assert result.returncode == 3, result.stderr
    assert "rights" in result.stderr and "bg_lighthouse is CC-BY without an attribution" in result.stderr
    assert not (out / "episode.mp4").exists()


def test_an_output_folder_under_a_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"--out: value .*: expected a folder, found a file \(.*a-file is a file\)"):
        render(RenderRequest(project=PILOT / "project.json", out=blocker / "out", store=tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_a_failed_render_says_why_and_withdraws_stale_outputs(golden: dict[str, Any], tmp_path: Path) -> None:
    data = json.loads(golden["project"].read_text())
    data["canon"]["characters"][0]["voice"] = "zz-no-such-voice"  # a well-formed name espeak-ng lacks
    project = write_project(tmp_path / "project.json", data)
    out, store = tmp_path / "out", tmp_path / "store"
    shutil.copytree(golden["out"], out)
    shutil.copytree(golden["store"], store)
    with pytest.raises(MediaError, match="espeak-ng exited"):
        render(RenderRequest(project=project, out=out, store=store))
    summary = RunSummary.model_validate_json((out / "run_summary.json").read_text())
    assert summary.status == "failed" and summary.output_hash is None
    assert [(e.code, e.stage) for e in summary.errors] == [("media.media", "media")]
    assert "zz-no-such-voice" in summary.errors[0].message
    assert sorted(p.name for p in out.iterdir()) == ["run_summary.json"], "no output of an earlier run remains"
