"""End to end: shots + one AAC track -> episode, frame- and sample-exact, reproducible."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import MediaError
from pipeline.media import assemble, audio, probe, shots, stills
from tests.pipeline.media.conftest import FPS, HEIGHT, WIDTH, sha256


@pytest.fixture
def clips(picture: Path, tmp_path: Path) -> list[Path]:
    """Three shots with odd frame counts: a still with a caption, a Ken Burns move, a card."""
    covered = tmp_path / "covered.png"
    stills.cover_image(picture, WIDTH, HEIGHT, covered, scale=shots.KEN_BURNS_HEADROOM)
    card = tmp_path / "card.png"
    stills.draw_card(["asset missing_01"], WIDTH, HEIGHT, card)
    strip = tmp_path / "caption.png"
    stills.draw_caption("A caption", WIDTH, strip)
    base = shots.ShotSpec(kind="still", image=covered, frames=31, fps=FPS, width=WIDTH, height=HEIGHT)
    specs = [
        replace(base, captions=(shots.CaptionCue(3, 20, strip),), fade_in=4),
        replace(base, kind="ken_burns", frames=26, zoom_to=1.15, pan=(-1.0, 0.3)),
        replace(base, image=card, frames=17, fade_out=5),
    ]
    # Odd names: a space and a quote must survive the concat list's escaping.
    paths = [tmp_path / "shots" / f"shot {index} it's.mp4" for index in range(len(specs))]
    for spec, path in zip(specs, paths, strict=True):
        shots.render_shot(spec, path)
    return paths


def _episode_audio(frames: int, out: Path) -> None:
    """Music plus two warbling 'voice' clips, the second running past the end."""
    total = frames * audio.samples_per_frame(FPS)
    t = np.arange(audio.SAMPLE_RATE // 2) / audio.SAMPLE_RATE
    speech = (0.2 * np.sin(2 * math.pi * 600 * t) * (1 + np.sin(2 * math.pi * 3 * t))).astype(np.float32)
    pcm = audio.mix([(4000, speech), (total - 6000, speech)], audio.music_bed(total, "calm", 1), total)
    pcm, _ = audio.normalise_loudness(pcm, target_lufs=-16.0)
    audio.encode_aac(pcm, out)


def _top_level_boxes(path: Path) -> list[bytes]:
    data, boxes, offset = path.read_bytes(), [], 0
    while offset < len(data):
        boxes.append(data[offset + 4 : offset + 8])
        offset += int.from_bytes(data[offset : offset + 4], "big")
    return boxes


def test_episode_is_frame_and_sample_exact_and_reproducible(clips: list[Path], tmp_path: Path) -> None:
    frames = sum(probe.count_video_frames(clip) for clip in clips)
    assert frames == 31 + 26 + 17
    _episode_audio(frames, tmp_path / "mix.m4a")
    episode = tmp_path / "out" / "episode.mp4"
    assemble.assemble_episode(clips, tmp_path / "mix.m4a", episode)

    assert probe.count_video_frames(episode) == frames
    assert probe.audio_sample_count(episode) == frames * 2000
    expected = [md5 for clip in clips for md5 in probe.video_framemd5(clip)]
    assert probe.video_framemd5(episode) == expected
    assert audio.integrated_loudness(probe.decode_audio(episode)) == pytest.approx(-16.0, abs=0.5)
    boxes = _top_level_boxes(episode)
    assert boxes.index(b"moov") < boxes.index(b"mdat")  # +faststart: playable while downloading

    again = tmp_path / "again.mp4"
    assemble.assemble_episode(clips, tmp_path / "mix.m4a", again)
    assert sha256(again) == sha256(episode)


def test_concat_list_escapes_quotes_and_refuses_newlines(tmp_path: Path) -> None:
    listing = assemble.concat_list([tmp_path / "it's here.mp4"])
    assert listing.splitlines()[1] == f"file '{tmp_path}/it'\\''s here.mp4'"
    with pytest.raises(MediaError, match="line break"):
        assemble.concat_list([tmp_path / "two\nlines.mp4"])


def test_assemble_reports_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        assemble.assemble_episode([tmp_path / "missing.mp4"], tmp_path / "mix.m4a", tmp_path / "out.mp4")
    with pytest.raises(MediaError, match="no clips"):
        assemble.assemble_episode([], tmp_path / "mix.m4a", tmp_path / "out.mp4")
