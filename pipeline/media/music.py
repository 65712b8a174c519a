"""A generated music bed: a soft pad, bass and arpeggio on a chord progression per mood.

No sample library and no randomness outside ``numpy.random.default_rng(seed)``, so a bed is
a pure function of (length, mood, seed) and never needs caching or a licence. One circular
loop of the progression (~30 s) is synthesised and tiled: 10 minutes take 0.1-0.4 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError
from pipeline.media.loudness import integrated_loudness
from pipeline.media.pcm import CHANNELS, SAMPLE_RATE

#: Loudness of the bed. Voice clips sit at ``voice.VOICE_LUFS`` (-20); the 10 LU between them
#: keeps the music clearly under speech before ducking. The final mix is normalised as a whole.
MUSIC_LUFS = -30.0


@dataclass(frozen=True)
class _Mood:
    root: int  # MIDI note of the key's tonic (octave 3)
    minor: bool
    bpm: float
    progression: tuple[int, ...]  # scale degrees (0-based) of the chord roots, one per bar


#: Music moods, named as ``pipeline.models.project.Mood``. A mood picks key, mode, tempo and
#: chord progression; the seed picks voicing, arpeggio pattern and detune, so episodes with
#: one mood still differ.
MOODS: dict[str, _Mood] = {
    "calm": _Mood(root=53, minor=False, bpm=64, progression=(0, 4, 5, 3)),
    "upbeat": _Mood(root=55, minor=False, bpm=100, progression=(3, 0, 4, 5)),
    "tense": _Mood(root=50, minor=True, bpm=88, progression=(0, 5, 6, 4)),
    "somber": _Mood(root=57, minor=True, bpm=58, progression=(0, 3, 5, 4)),
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_ARPEGGIOS = ((0, 1, 2, 1), (0, 2, 1, 2), (2, 1, 0, 1), (0, 1, 2, 3))


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _chord(mood: _Mood, degree: int) -> list[int]:
    """Return MIDI notes of the diatonic triad (plus the octave) on ``degree``."""
    scale = _MINOR if mood.minor else _MAJOR
    notes = []
    for step in (0, 2, 4, 7):
        index = degree + step
        notes.append(mood.root + 12 * (index // 7) + scale[index % 7])
    if mood.minor and degree == 4:  # harmonic-minor V: raise its third for a real cadence
        notes[1] += 1
    return notes


def _panned(tone: np.ndarray, pan: float) -> np.ndarray:
    """Return mono ``tone`` as stereo with constant-power panning, ``pan`` in [-1, 1]."""
    angle = (pan + 1) * math.pi / 4
    return np.stack([tone * math.cos(angle), tone * math.sin(angle)], axis=1)


def _add(loop: np.ndarray, start: int, stereo: np.ndarray) -> None:
    """Add ``stereo`` into the circular ``loop`` at ``start``; what overhangs wraps to 0."""
    first = min(stereo.shape[0], loop.shape[0] - start)
    loop[start : start + first] += stereo[:first]
    loop[: stereo.shape[0] - first] += stereo[first:]


def _music_loop(mood: _Mood, rng: np.random.Generator) -> np.ndarray:
    """Synthesise one seamless loop: the progression twice, pads + bass + soft arpeggio.

    The loop is circular (tails wrap to the start), so tiling it has no seam; synthesising
    ~30 s once (each chord's pad once) and tiling is what makes a 10-minute bed cheap.
    """
    beat = round(SAMPLE_RATE * 60 / mood.bpm)
    bar = 4 * beat
    loop = np.zeros((2 * len(mood.progression) * bar, CHANNELS), dtype=np.float32)
    detune = rng.uniform(0.002, 0.006)
    patterns = rng.permutation(len(_ARPEGGIOS))[:2]
    tail = bar // 2
    pad_t = np.arange(bar + tail, dtype=np.float32) / SAMPLE_RATE
    pad_env = np.ones(bar + tail, dtype=np.float32)
    fade = np.sin(np.linspace(0, math.pi / 2, tail, dtype=np.float32)) ** 2
    pad_env[:tail] = fade
    pad_env[-tail:] = fade[::-1]
    note_t = np.arange(2 * beat, dtype=np.float32) / SAMPLE_RATE
    pluck_env = np.exp(-note_t * 3.0) * np.minimum(1.0, note_t / 0.01)
    for number, degree in enumerate(mood.progression):
        notes = _chord(mood, degree)
        pad = np.zeros((bar + tail, CHANNELS), dtype=np.float32)
        for index, note in enumerate(notes[:3]):
            for side, cents in ((-0.6, -detune), (0.6, detune)):
                omega = np.float32(2 * math.pi * _hz(note) * (1 + cents)) * pad_t + np.float32(rng.uniform(0, 6.3))
                wave = np.sin(omega) + np.float32(0.3) * np.sin(2 * omega)
                pad += _panned(np.float32(0.12) * pad_env * wave, side * (1 - index / 3))
        bass = np.sin(np.float32(2 * math.pi * _hz(notes[0] - 12)) * pad_t)
        pad += _panned(np.float32(0.18) * pad_env * bass, 0.0)
        for repeat, pattern_index in enumerate(patterns):
            start = (repeat * len(mood.progression) + number) * bar
            _add(loop, start, pad)
            for step, choice in enumerate(_ARPEGGIOS[pattern_index]):
                omega = np.float32(2 * math.pi * _hz(notes[choice] + 12)) * note_t
                tone = np.float32(0.07) * pluck_env * (np.sin(omega) + np.float32(0.2) * np.sin(3 * omega))
                _add(loop, start + step * beat, _panned(tone, 0.5 if step % 2 else -0.5))
    return loop


def music_bed(total_samples: int, mood: str, seed: int) -> np.ndarray:
    """Generate ``total_samples`` of stereo float32 music at :data:`MUSIC_LUFS`.

    Deterministic: all variation comes from ``numpy.random.default_rng(seed)``. Fades in over
    2 s and out over 3 s so the episode neither starts nor stops on a chord.
    """
    if mood not in MOODS:
        raise InputError(f"music mood {mood!r} is unknown; expected one of {sorted(MOODS)}")
    loop = _music_loop(MOODS[mood], np.random.default_rng(seed))
    loudness = integrated_loudness(loop)
    loop *= np.float32(10 ** ((MUSIC_LUFS - loudness) / 20))
    bed = np.empty((total_samples, CHANNELS), dtype=np.float32)
    for start in range(0, total_samples, loop.shape[0]):
        piece = min(loop.shape[0], total_samples - start)
        bed[start : start + piece] = loop[:piece]
    fade_in = min(2 * SAMPLE_RATE, total_samples)
    fade_out = min(3 * SAMPLE_RATE, total_samples)
    bed[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)[:, None]
    bed[total_samples - fade_out :] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)[:, None]
    return bed
