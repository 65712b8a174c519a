"""Facts about rendered media, read with ffmpeg itself (the pinned build ships no ffprobe).

Used by tests and by checks that a render has the frame and sample counts the integer-frame
timeline promised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.media.ffmpeg import media_url, read_ffmpeg_stdout
from pipeline.media.pcm import CHANNELS, SAMPLE_RATE


def _framemd5_lines(path: Path, stream: str, *, decode: bool) -> list[str]:
    codec = [] if decode else ["-c", "copy"]
    out = read_ffmpeg_stdout(
        ["-i", media_url(path), "-map", f"0:{stream}:0", *codec, "-f", "framemd5", "-"],
        f"probe {stream} frames of {Path(path).name}",
    )
    return [line for line in out.decode("ascii", "replace").splitlines() if line and not line.startswith("#")]


def count_video_frames(path: Path) -> int:
    """Count video packets without decoding (one packet is one frame for H.264 here)."""
    return len(_framemd5_lines(path, "v", decode=False))


def video_framemd5(path: Path) -> list[str]:
    """Return the md5 of every decoded video frame; equal lists mean equal pictures.

    Unlike a file hash this survives container-level differences (another ffmpeg build,
    another muxer version), so it is what cross-build comparisons should use.
    """
    return [line.rsplit(",", 1)[1].strip() for line in _framemd5_lines(path, "v", decode=True)]


def decode_audio(path: Path) -> np.ndarray:
    """Decode the first audio stream to stereo float32 at 48 kHz, shape (samples, 2).

    Decoding honours the mp4 edit list, so AAC priming and end padding are already removed.
    """
    raw = read_ffmpeg_stdout(
        ["-i", media_url(path), "-map", "0:a:0", "-f", "f32le", "-ac", str(CHANNELS), "-ar", str(SAMPLE_RATE), "-"],
        f"decode audio of {Path(path).name}",
    )
    return np.frombuffer(raw, dtype="<f4").reshape(-1, CHANNELS)


def audio_sample_count(path: Path) -> int:
    """Return the number of decoded audio samples per channel."""
    return int(decode_audio(path).shape[0])
