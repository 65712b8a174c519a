"""Narration with espeak-ng: a local, deterministic voice for animatics.

espeak-ng is an optional system package; callers check :func:`espeak_available` and put
:func:`espeak_version` into cache keys, because another version speaks differently.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import InputError, MediaError
from pipeline.media.ffmpeg import stderr_tail
from pipeline.media.loudness import integrated_loudness, peak_limit
from pipeline.media.pcm import read_wav, write_wav
from pipeline.media.processes import die_with_parent
from pipeline.models.canon import VOICE_PATTERN

#: espeak-ng speaking rates (words per minute): the default, and the fastest still clearly
#: intelligible rate, the limit when a line is sped up to fit its shot.
DEFAULT_WPM = 165
MAX_WPM = 250

#: Loudness every voice clip is brought to (see ``music.MUSIC_LUFS`` for the bed under it).
VOICE_LUFS = -20.0

_VOICE_NAME = re.compile(VOICE_PATTERN)


def espeak_available() -> bool:
    """Return whether the espeak-ng binary is on PATH."""
    return shutil.which("espeak-ng") is not None


@functools.cache
def espeak_version() -> str | None:
    """Return espeak-ng's version, e.g. "eSpeak NG text-to-speech: 1.51", or None if absent."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        return None
    proc = subprocess.run([binary, "--version"], capture_output=True, check=False)
    if proc.returncode != 0:
        return None
    # The line goes on with "Data at: /usr/lib/...": a path, not part of the version.
    return proc.stdout.decode("utf-8", "replace").split("Data at:")[0].strip()


def synthesize_voice(text: str, voice: str, out_wav: Path, *, speed_wpm: int = DEFAULT_WPM, pitch: int = 50) -> None:
    """Speak ``text`` with espeak-ng into a 48 kHz mono 16-bit WAV at :data:`VOICE_LUFS`.

    The text goes through stdin, so nothing in it (a leading '-', quotes) can be read as an
    option, and there is no shell. espeak-ng's 22.05 kHz output is resampled by ``read_wav``
    (polyphase, exact ratio) and loudness-matched, so every clip sits at the same level
    against the music bed whatever the voice. The WAV appears atomically.
    """
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise MediaError("synthesize voice: espeak-ng is not installed (apt-get install espeak-ng)")
    if not _VOICE_NAME.match(voice):
        raise InputError(f"synthesize voice: {voice!r} is not a valid espeak-ng voice name")
    options = ["-v", voice, "-s", str(int(speed_wpm)), "-p", str(int(pitch)), "-b", "1"]
    # Beside the output (a stage's scratch folder), so a killed process leaves it where it is swept.
    Path(out_wav).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".espeak-", dir=Path(out_wav).parent) as tmp:
        raw_wav = Path(tmp) / "espeak.wav"
        command = [binary, *options, "-w", str(raw_wav), "--stdin"]
        proc = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False,
                              preexec_fn=die_with_parent())  # killed with its caller
        if proc.returncode != 0 or not raw_wav.is_file():
            tail = stderr_tail(proc.stderr + proc.stdout)
            raise MediaError(f"synthesize voice {voice!r}: espeak-ng exited {proc.returncode}: {tail}")
        pcm = read_wav(raw_wav)
    write_wav(_match_loudness(pcm, VOICE_LUFS), out_wav)


def _match_loudness(pcm: np.ndarray, target_lufs: float) -> np.ndarray:
    """Gain ``pcm`` to ``target_lufs``, peaks limited to -1 dBFS; silence is returned as is."""
    loudness = integrated_loudness(pcm)
    if not math.isfinite(loudness):
        return pcm
    return peak_limit(pcm * np.float32(10 ** ((target_lufs - loudness) / 20)), 10 ** (-1 / 20))
