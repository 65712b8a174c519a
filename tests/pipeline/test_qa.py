"""Each QA gate passes on a sound episode and fails, naming the facts, on each kind of fault."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.canonical import digest
from pipeline.documents import load_project
from pipeline.models.project import ProfileSettings, TargetDuration
from pipeline.stages.assets import Library, build_manifest
from pipeline.stages.canon_gate import apply_diffs
from pipeline.stages.captions import episode_cues, shot_starts, to_srt
from pipeline.stages.qa import EpisodeFacts, VoiceSpan, run_gates
from pipeline.stages.render_plan import build_plan
from pipeline.stages.script import generate_script
from pipeline.testing import PILOT
from tests.pipeline.conftest import pilot_shotlist

SPF = 2000


@pytest.fixture(scope="module")
def sound() -> EpisodeFacts:
    loaded = load_project(PILOT / "project.json")
    canon, _ = apply_diffs(loaded.canon, loaded.project.canon_diffs)
    script = generate_script(loaded.project, canon)
    shotlist = pilot_shotlist()
    manifest = build_manifest(shotlist, digest(shotlist), script, canon, Library(Path("."), {}),
                              lambda *_: "unused", lambda _: None, "calm")
    plan = build_plan("preview_local", ProfileSettings(), shotlist, digest(shotlist), manifest, digest(manifest),
                      "ffmpeg test", "espeak-ng test")
    starts = shot_starts(shotlist)
    voice = tuple(
        VoiceSpan(shot.shot_id, (starts[shot.shot_id] + line.start_frame) * SPF,
                  (starts[shot.shot_id] + line.end_frame) * SPF)
        for shot in shotlist.shots for line in shot.lines
    )
    return EpisodeFacts(
        target=TargetDuration(seconds=shotlist.total_frames / 24, tolerance=0.1), shotlist=shotlist,
        manifest=manifest, plan=plan, frames=shotlist.total_frames, audio_samples=shotlist.total_frames * SPF,
        sample_rate=48000, loudness_lufs=-16.02, peak_db=-1.6, srt_text=to_srt(episode_cues(shotlist), 24),
        voice=voice, stored_images=frozenset(),
    )


def _failed(facts: EpisodeFacts) -> dict[str, str]:
    return {gate.gate: gate.facts for gate in run_gates(facts) if not gate.passed}


def test_a_sound_episode_passes_every_gate(sound: EpisodeFacts) -> None:
    assert _failed(sound) == {}


def test_frame_or_sample_mismatch_fails_integrity(sound: EpisodeFacts) -> None:
    assert "frames" in _failed(dataclasses.replace(sound, frames=sound.frames - 1))["integrity"]
    assert "samples" in _failed(dataclasses.replace(sound, audio_samples=sound.audio_samples + 1024))["integrity"]


def test_runtime_outside_the_window_fails(sound: EpisodeFacts) -> None:
    failed = _failed(dataclasses.replace(sound, target=TargetDuration(seconds=600, tolerance=0.1)))
    assert "outside the target window 540.00-660.00 s" in failed["runtime"]


def test_caption_drift_fails_caption_sync(sound: EpisodeFacts) -> None:
    shifted = sound.srt_text.replace("00:00:08,458", "00:00:08,958", 1)
    assert shifted != sound.srt_text
    assert "cue 2" in _failed(dataclasses.replace(sound, srt_text=shifted))["caption_sync"]
    garbled = _failed(dataclasses.replace(sound, srt_text="1\nnot a time\nx\n"))["caption_sync"]
    assert "unreadable" in garbled


def test_voice_spilling_out_of_its_shot_fails_caption_sync(sound: EpisodeFacts) -> None:
    first = sound.voice[0]
    late = dataclasses.replace(first, end_sample=first.end_sample + 48000 * 5)
    failed = _failed(dataclasses.replace(sound, voice=(late, *sound.voice[1:])))
    assert f"voice for {first.shot_id}" in failed["caption_sync"]


@pytest.mark.parametrize(("lufs", "peak", "fragment"), [(-19.5, -3.0, "measured -19.50 LUFS"),
                                                        (-16.0, -0.2, "sample peak -0.20 dBFS")])
def test_loudness_off_target_or_peaking_fails(sound: EpisodeFacts, lufs: float, peak: float, fragment: str) -> None:
    assert fragment in _failed(dataclasses.replace(sound, loudness_lufs=lufs, peak_db=peak))["loudness"]


def test_silence_fails_unless_planned(sound: EpisodeFacts) -> None:
    silent = dataclasses.replace(sound, loudness_lufs=None, peak_db=None)
    assert "silent" in _failed(silent)["loudness"]
    audio = sound.plan.audio.model_copy(update={"voice_engine": "none", "music_mood": None})
    by_design = dataclasses.replace(silent, plan=sound.plan.model_copy(update={"audio": audio}))
    assert "loudness" not in _failed(by_design)


def test_unflagged_placeholder_or_lost_image_fails_missing_assets(sound: EpisodeFacts) -> None:
    first = sound.manifest.assets[0]
    unflagged = first.model_copy(update={"resolved": first.resolved.model_copy(update={"flags": ()})})
    manifest = sound.manifest.model_copy(update={"assets": (unflagged, *sound.manifest.assets[1:])})
    failed = _failed(dataclasses.replace(sound, manifest=manifest))
    assert f"asset {first.asset_id} became a placeholder without a flag" in failed["missing_assets"]
    shot = sound.plan.shots[0].model_copy(update={"asset_uri": "cas://sha256/" + "0" * 64})
    plan = sound.plan.model_copy(update={"shots": (shot, *sound.plan.shots[1:])})
    assert "not in the store" in _failed(dataclasses.replace(sound, plan=plan))["missing_assets"]


def test_commercial_asset_without_purchase_record_fails_rights(sound: EpisodeFacts) -> None:
    first = sound.manifest.assets[0]
    license = first.resolved.license.model_copy(update={"license_type": "commercial_licensed"})
    asset = first.model_copy(update={"resolved": first.resolved.model_copy(update={"license": license})})
    manifest = sound.manifest.model_copy(update={"assets": (asset, *sound.manifest.assets[1:])})
    assert "without a purchase_record" in _failed(dataclasses.replace(sound, manifest=manifest))["rights"]


def test_no_lines_and_no_music_is_silent_by_design_even_with_a_voice_engine(sound: EpisodeFacts) -> None:
    """A wordless episode without music is silent whether or not espeak-ng is installed."""
    audio = sound.plan.audio.model_copy(update={"music_mood": None})
    silent = dataclasses.replace(
        sound, loudness_lufs=None, peak_db=None, manifest=sound.manifest.model_copy(update={"vo_lines": ()}),
        plan=sound.plan.model_copy(update={"audio": audio}),
    )
    assert sound.plan.audio.voice_engine != "none"
    assert "loudness" not in _failed(silent)
    assert "silent" in _failed(dataclasses.replace(silent, manifest=sound.manifest))["loudness"]
