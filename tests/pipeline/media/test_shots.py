"""Shot rendering with real ffmpeg: exact frames, determinism, motion, captions, fades, stills."""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import MediaError
from pipeline.media import ffmpeg, probe, shots, stills
from tests.pipeline.media.conftest import FPS, HEIGHT, WIDTH, decode_gray, sha256


@pytest.fixture
def covered(picture: Path, tmp_path: Path) -> Path:
    out = tmp_path / "covered.png"
    stills.cover_image(picture, WIDTH, HEIGHT, out, scale=shots.KEN_BURNS_HEADROOM)
    return out


def _spec(image: Path, kind: shots.ShotKind = "still", frames: int = 30, **changes: Any) -> shots.ShotSpec:
    spec = shots.ShotSpec(kind=kind, image=image, frames=frames, fps=FPS, width=WIDTH, height=HEIGHT)
    return replace(spec, **changes)


def test_still_has_exact_frames_is_deterministic_and_does_not_change(covered: Path, tmp_path: Path) -> None:
    spec = _spec(covered, frames=37)
    shots.render_shot(spec, tmp_path / "a.mp4")
    shots.render_shot(spec, tmp_path / "b.mp4")
    assert sha256(tmp_path / "a.mp4") == sha256(tmp_path / "b.mp4")
    assert probe.count_video_frames(tmp_path / "a.mp4") == 37
    frames = decode_gray(tmp_path / "a.mp4").astype(np.int16)
    assert len(frames) == 37
    # x264 refines a static picture over its P-frames, so frames are equal only to within coding noise.
    assert np.abs(frames[0] - frames[-1]).mean() < 1
    assert not list(tmp_path.glob(".*part*")), "temp files must not be left behind"


def test_ken_burns_moves_and_renders_the_same_bytes_in_parallel(covered: Path, tmp_path: Path) -> None:
    spec = _spec(covered, "ken_burns", frames=29, zoom_from=1.0, zoom_to=1.15, pan=(1.0, -0.5))
    shots.render_shot(spec, tmp_path / "solo.mp4")
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda name: shots.render_shot(spec, tmp_path / name), ["p1.mp4", "p2.mp4", "p3.mp4"]))
    assert {sha256(tmp_path / name) for name in ("solo.mp4", "p1.mp4", "p2.mp4", "p3.mp4")} == {
        sha256(tmp_path / "solo.mp4")
    }
    assert probe.count_video_frames(tmp_path / "solo.mp4") == 29
    frames = decode_gray(tmp_path / "solo.mp4").astype(np.int16)
    assert np.abs(frames[0] - frames[-1]).mean() > 10


@pytest.mark.parametrize(
    ("zoom_from", "zoom_to", "pan"),
    [(1.0, 1.15, (0.0, 0.0)), (1.15, 1.0, (0.0, 0.0)), (1.1, 1.1, (-1.0, 0.0)), (1.1, 1.1, (1.0, 0.0))],
    ids=["push_in", "pull_out", "pan_left", "pan_right"],
)
def test_every_move_renders_the_same_bytes_every_time(
    covered: Path, tmp_path: Path, zoom_from: float, zoom_to: float, pan: tuple[float, float]
) -> None:
    """A shrinking frame once made ``crop`` read uninitialised memory: pull-outs differed run to run."""
    spec = _spec(covered, "ken_burns", frames=40, zoom_from=zoom_from, zoom_to=zoom_to, pan=pan)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shots.render_shot(spec, tmp_path / name)
    assert len({sha256(tmp_path / name) for name in ("a.mp4", "b.mp4", "c.mp4")}) == 1


def test_ken_burns_pan_travels_left_to_right_smoothly(tmp_path: Path) -> None:
    """pan=(1, 0) moves the view rightwards, so a vertical line drifts left, a little every frame."""
    image = Image.new("RGB", (WIDTH * 2, HEIGHT * 2), (0, 0, 0))
    image.paste((255, 255, 255), (WIDTH - 4, 0, WIDTH + 4, HEIGHT * 2))  # line in the middle
    source = tmp_path / "line.png"
    image.save(source)
    covered = tmp_path / "line_covered.png"
    stills.cover_image(source, WIDTH, HEIGHT, covered, scale=1.2)
    spec = _spec(covered, "ken_burns", frames=24, zoom_from=1.2, zoom_to=1.2, pan=(1.0, 0.0))
    shots.render_shot(spec, tmp_path / "pan.mp4")
    columns = decode_gray(tmp_path / "pan.mp4")[:, HEIGHT // 2, :].astype(float)
    position = (columns * np.arange(WIDTH)).sum(axis=1) / columns.sum(axis=1)
    # The window slides over the whole slack (320 * 0.2 = 64 px) in 23 steps of ~2.8 px.
    assert position[0] - position[-1] == pytest.approx(64, abs=2)
    steps = -np.diff(position)
    assert steps.min() > 1.0 and steps.max() < 4.5, steps


def test_caption_shows_only_in_its_frame_range(covered: Path, tmp_path: Path) -> None:
    strip = tmp_path / "caption.png"
    _, strip_height = stills.draw_caption("Hello there, captions", WIDTH, strip)
    plain = _spec(covered, frames=30)
    captioned = replace(plain, captions=(shots.CaptionCue(start_frame=10, end_frame=20, image=strip),))
    shots.render_shot(plain, tmp_path / "plain.mp4")
    shots.render_shot(captioned, tmp_path / "captioned.mp4")
    base = decode_gray(tmp_path / "plain.mp4").astype(np.int16)
    frames = decode_gray(tmp_path / "captioned.mp4").astype(np.int16)
    bottom = slice(HEIGHT - strip_height - round(HEIGHT * shots.CAPTION_BOTTOM_MARGIN), HEIGHT)
    difference = [np.abs(frames[i][bottom] - base[i][bottom]).mean() for i in range(30)]
    shown = [i for i, value in enumerate(difference) if value > 8]
    assert shown == list(range(10, 20)), difference
    assert max(difference[:10] + difference[20:]) < 3


def test_fades_start_and_end_on_black(covered: Path, tmp_path: Path) -> None:
    shots.render_shot(_spec(covered, frames=24, fade_in=6, fade_out=6), tmp_path / "fade.mp4")
    frames = decode_gray(tmp_path / "fade.mp4")
    assert frames[0].mean() < 20 and frames[-1].mean() < 30
    assert frames[12].mean() > 60


def test_all_shot_kinds_share_codec_parameters(covered: Path, picture: Path, tmp_path: Path) -> None:
    """Identical SPS/PPS (the avcC box) is what lets the concat demuxer join with -c copy."""
    card = tmp_path / "card.png"
    stills.draw_card(["asset hero_01", "missing"], WIDTH, HEIGHT, card)
    strip = tmp_path / "caption.png"
    stills.draw_caption("x", WIDTH, strip)
    specs = [
        _spec(covered, frames=5),
        _spec(covered, "ken_burns", frames=7, zoom_to=1.1, captions=(shots.CaptionCue(0, 3, strip),), fade_in=2),
        _spec(card, frames=3),
    ]
    boxes = set()
    for number, spec in enumerate(specs):
        shots.render_shot(spec, tmp_path / f"{number}.mp4")
        data = (tmp_path / f"{number}.mp4").read_bytes()
        start = data.index(b"avcC") - 4
        boxes.add(data[start : start + int.from_bytes(data[start : start + 4], "big")])
    assert len(boxes) == 1


def test_invalid_specs_are_refused(covered: Path) -> None:
    with pytest.raises(ValueError, match="zoom"):
        _spec(covered, "ken_burns", zoom_from=0.9)
    with pytest.raises(ValueError, match="caption"):
        _spec(covered, frames=10, captions=(shots.CaptionCue(5, 11, covered),))
    with pytest.raises(ValueError, match="even"):
        _spec(covered, width=321)


def test_missing_input_and_failing_ffmpeg_raise_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        shots.render_shot(_spec(tmp_path / "nope.png"), tmp_path / "out.mp4")
    not_an_image = tmp_path / "fake.png"
    not_an_image.write_text("not a png")
    with pytest.raises(MediaError, match=r"render still shot out\.mp4: ffmpeg exited \d+: .+"):
        shots.render_shot(_spec(not_an_image), tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert not list(tmp_path.glob(".*part*"))


def test_ffmpeg_override_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINEFLEET_FFMPEG", str(tmp_path / "missing-ffmpeg"))
    with pytest.raises(MediaError, match="CINEFLEET_FFMPEG"):
        ffmpeg.ffmpeg_path()
    real = imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setenv("CINEFLEET_FFMPEG", real)
    assert ffmpeg.ffmpeg_path() == real


def test_build_id_names_the_binary() -> None:
    assert ffmpeg.build_id().startswith("ffmpeg version ")


# --- stills ------------------------------------------------------------------------------------


def _png_chunks(path: Path) -> list[bytes]:
    data, chunks, offset = path.read_bytes(), [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        chunks.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return chunks


def test_cover_image_crops_to_aspect_deterministically(tmp_path: Path) -> None:
    square = Image.new("RGB", (300, 300), (0, 0, 255))
    square.paste((255, 0, 0), (0, 0, 300, 50))  # red band at the top is cropped away
    source = tmp_path / "square.png"
    square.save(source, icc_profile=b"not really a profile", dpi=(300, 300))
    stills.cover_image(source, WIDTH, HEIGHT, tmp_path / "a.png", scale=1.5)
    stills.cover_image(source, WIDTH, HEIGHT, tmp_path / "b.png", scale=1.5)
    assert sha256(tmp_path / "a.png") == sha256(tmp_path / "b.png")
    with Image.open(tmp_path / "a.png") as result:
        assert result.size == (480, 270)
        assert result.getpixel((240, 2)) == (0, 0, 255)
    assert _png_chunks(tmp_path / "a.png") == [b"IHDR", b"IDAT", b"IEND"]


def test_cover_image_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(zlib.compress(b"garbage"))
    with pytest.raises(MediaError, match="cannot read image"):
        stills.cover_image(broken, WIDTH, HEIGHT, tmp_path / "out.png")


def test_card_shows_tag_and_text(tmp_path: Path) -> None:
    lines = ["asset forest_01", "A dark forest at night " * 6]
    stills.draw_card(lines, 640, 360, tmp_path / "card.png", accent=(0, 200, 0))
    with Image.open(tmp_path / "card.png") as card:
        pixels = np.asarray(card.convert("RGB")).astype(int)
    assert pixels.shape == (360, 640, 3)
    accent = (pixels[:, :, 1] > 150) & (pixels[:, :, 0] < 50)
    text = pixels.min(axis=2) > 180  # near-white body text
    assert accent.sum() > 1000 and text.sum() > 500


def test_caption_strip_wraps_to_at_most_three_lines(tmp_path: Path) -> None:
    size = stills.draw_caption("short", 640, tmp_path / "short.png")
    long_size = stills.draw_caption("a long sentence that goes on " * 20, 640, tmp_path / "long.png")
    with Image.open(tmp_path / "long.png") as strip:
        assert strip.mode == "RGBA" and strip.size == long_size
        alpha = np.asarray(strip.getchannel("A"))
    assert size[0] == long_size[0] == 640
    assert size[1] < long_size[1] <= 3 * size[1]
    assert alpha.min() == 0 and alpha.max() == 255
