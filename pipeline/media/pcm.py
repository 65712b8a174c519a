"""The PCM conventions every audio module shares, and WAV input/output.

The episode timeline is integer video frames; at 48 kHz every common frame rate (24, 25, 30,
...) is a whole number of samples, so audio positions are exact integers too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.errors import MediaError
from pipeline.media.files import atomic_output

SAMPLE_RATE = 48000
CHANNELS = 2


def samples_per_frame(fps: int) -> int:
    """Return audio samples per video frame; the frame rate must divide 48000 exactly."""
    if fps <= 0 or SAMPLE_RATE % fps:
        raise ValueError(f"fps {fps} does not divide {SAMPLE_RATE}; the timeline would drift")
    return SAMPLE_RATE // fps


def read_wav(path: Path) -> np.ndarray:
    """Read a WAV as mono float32 at 48 kHz (channels averaged, other rates resampled).

    Resampling is polyphase with the exact rational ratio (deterministic, no drift).
    """
    import scipy.io.wavfile  # imported here: scipy costs a second of CPU in every process that only plans or schedules
    import scipy.signal

    try:
        rate, data = scipy.io.wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise MediaError(f"read wav {path}: {exc}") from exc
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        middle, half = (int(info.max) + int(info.min) + 1) / 2, (int(info.max) - int(info.min) + 1) / 2
        data = (data.astype(np.float64) - middle) / half
    pcm = np.asarray(data, dtype=np.float64)
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1)
    if rate != SAMPLE_RATE:
        common = math.gcd(rate, SAMPLE_RATE)
        pcm = scipy.signal.resample_poly(pcm, SAMPLE_RATE // common, rate // common)
    return pcm.astype(np.float32)


def write_wav(pcm: np.ndarray, out_wav: Path) -> None:
    """Write mono ``pcm`` as a 48 kHz 16-bit WAV, atomically (values clipped to [-1, 1))."""
    import scipy.io.wavfile  # imported here: scipy costs a second of CPU in every process that only plans or schedules

    ints = np.round(np.clip(pcm, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with atomic_output(out_wav) as tmp:
        scipy.io.wavfile.write(tmp, SAMPLE_RATE, ints)
