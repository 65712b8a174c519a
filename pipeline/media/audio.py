"""The episode's sound: one PCM timeline (48 kHz stereo float32) mixed in numpy, AAC once.

This module is the public audio API (voice, music, mix, loudness, encode); the pieces live
in small modules next to it. Mixing in numpy rather than in an ffmpeg graph avoids ffmpeg
7+'s multi-input end-of-file race, which drops a 1024-sample block at random (video.md
section 2), and is far faster than ``sidechaincompress`` + two-pass ``loudnorm``.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.media.aac import encode_aac
from pipeline.media.loudness import integrated_loudness, normalise_loudness
from pipeline.media.music import MOODS, MUSIC_LUFS, music_bed
from pipeline.media.pcm import CHANNELS, SAMPLE_RATE, read_wav, samples_per_frame
from pipeline.media.voice import (
    DEFAULT_WPM,
    MAX_WPM,
    VOICE_LUFS,
    espeak_available,
    espeak_version,
    synthesize_voice,
)

__all__ = [
    "CHANNELS",
    "DEFAULT_WPM",
    "MAX_WPM",
    "MOODS",
    "MUSIC_LUFS",
    "SAMPLE_RATE",
    "VOICE_LUFS",
    "encode_aac",
    "espeak_available",
    "espeak_version",
    "integrated_loudness",
    "mix",
    "music_bed",
    "normalise_loudness",
    "read_wav",
    "samples_per_frame",
    "synthesize_voice",
]

_BLOCK = SAMPLE_RATE // 100  # 10 ms analysis block for ducking
_BLOCKS_PER_SECOND = SAMPLE_RATE / _BLOCK
_VOICE_ACTIVE_DB = -50.0  # block power above this counts as speech (clips sit at -20 LUFS)
_DUCK_HOLD_S = 0.25  # keep the music down across the gaps between words
_DUCK_ATTACK_S = 0.03
_DUCK_RELEASE_S = 0.30
_DUCK_LEAD_S = 0.06  # start two attack times early: the music is ~86 % down at the first syllable


def _duck_gain(track: np.ndarray, duck_db: float) -> np.ndarray:
    """Return the per-sample music gain: ``duck_db`` under speech, unity elsewhere.

    Speech is detected per 10 ms block, held across short gaps and anticipated by 60 ms (the
    timeline is known, so the music is mostly down when the first syllable lands).
    The level follows with a 30 ms attack and 300 ms release, then is ramped linearly inside
    each block so the gain has no steps.
    """
    import scipy.ndimage  # imported here: scipy costs a second of CPU in every process that only plans or schedules

    full = track.size // _BLOCK
    blocks = track[: full * _BLOCK].reshape(full, _BLOCK)
    power = np.einsum("bs,bs->b", blocks, blocks) / _BLOCK
    if track.size > full * _BLOCK:
        rest = track[full * _BLOCK :]
        power = np.append(power, np.dot(rest, rest) / rest.size)
    hold = round(_DUCK_HOLD_S * _BLOCKS_PER_SECOND)
    lead = round(_DUCK_LEAD_S * _BLOCKS_PER_SECOND)
    # Extend each active block `hold` blocks forward and `lead` blocks backward.
    active = power > 10 ** (_VOICE_ACTIVE_DB / 10)
    active = scipy.ndimage.maximum_filter1d(active.astype(np.uint8), size=hold + lead + 1, origin=(hold - lead) // 2)
    attack = math.exp(-1 / (_DUCK_ATTACK_S * _BLOCKS_PER_SECOND))
    release = math.exp(-1 / (_DUCK_RELEASE_S * _BLOCKS_PER_SECOND))
    edges = np.empty(active.size + 1)  # level in dB at each block boundary
    level = edges[0] = 0.0
    for index, on in enumerate(active.tolist()):
        goal = duck_db if on else 0.0
        level = goal + (attack if goal < level else release) * (level - goal)
        edges[index + 1] = level
    gains = np.power(10.0, edges / 20).astype(np.float32)
    ramp = np.arange(_BLOCK, dtype=np.float32) / _BLOCK
    per_sample = np.multiply((gains[1:] - gains[:-1])[:, None], ramp[None, :])
    per_sample += gains[:-1, None]
    return per_sample.reshape(-1)[: track.size]


def mix(
    voice: list[tuple[int, np.ndarray]],
    music: np.ndarray | None,
    total_samples: int,
    *,
    duck_db: float = -12.0,
) -> np.ndarray:
    """Mix mono voice clips, each placed at its start sample, over ``music``, ducking it.

    Clips running past ``total_samples`` are cut; music shorter than the timeline is padded
    with silence. Returns stereo float32 of exactly ``total_samples`` samples.
    """
    track = np.zeros(total_samples, dtype=np.float32)
    for start, clip in voice:
        if start < 0:
            raise ValueError(f"voice clip starts at negative sample {start}")
        end = min(total_samples, start + clip.shape[0])
        if end > start:
            track[start:end] += clip[: end - start]
    out = np.zeros((total_samples, CHANNELS), dtype=np.float32)
    if music is not None:
        length = min(total_samples, music.shape[0])
        if voice and duck_db:
            np.multiply(music[:length], _duck_gain(track, duck_db)[:length, None], out=out[:length])
        else:
            out[:length] = music[:length]
    out += track[:, None]
    return out
