"""Shared helpers for the media tests: small synthetic pictures and decoded frames."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.media.ffmpeg import media_url, read_ffmpeg_stdout

#: Tests render small frames; the filter graphs are the same as at 1280x720.
WIDTH, HEIGHT, FPS = 320, 180, 24


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decode_gray(path: Path, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Decode every frame of ``path`` to 8-bit luma, shape (frames, height, width)."""
    raw = read_ffmpeg_stdout(["-i", media_url(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"], "decode test frames")
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width)


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A detailed 480x300 RGB picture (grid, discs, gradient): motion shows in every frame."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:300, 0:480]
    pixels = np.stack([x * 255 // 480, y * 255 // 300, (x + y) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        cx, cy, r = int(rng.integers(0, 480)), int(rng.integers(0, 300)), int(rng.integers(6, 40))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for column in range(0, 480, 40):
        draw.line((column, 0, column, 300), fill=(255, 255, 255), width=2)
    path = tmp_path / "picture.png"
    image.save(path)
    return path
