"""Audio: loudness, music bed, mixing and ducking, normalisation, AAC sample exactness, espeak."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest

from pipeline.errors import InputError, MediaError
from pipeline.media import aac, audio, probe, voice
from tests.pipeline.conftest import require_espeak
from tests.pipeline.media.conftest import sha256

RATE = audio.SAMPLE_RATE


def _tone(seconds: float, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def test_samples_per_frame_keeps_the_timeline_integer() -> None:
    assert audio.samples_per_frame(24) == 2000
    assert audio.samples_per_frame(30) == 1600
    with pytest.raises(ValueError):
        audio.samples_per_frame(7)


def test_loudness_matches_pyloudnorm() -> None:
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal((RATE * 12, 2)) * 0.05).astype(np.float32)
    pcm[: RATE * 4] *= 0.02  # a quiet stretch, so both gates matter
    expected = pyloudnorm.Meter(RATE).integrated_loudness(pcm.astype(np.float64))
    assert audio.integrated_loudness(pcm) == pytest.approx(expected, abs=0.01)
    assert audio.integrated_loudness(np.zeros((RATE, 2), np.float32)) == -math.inf


def test_music_bed_is_deterministic_and_at_its_level() -> None:
    bed = audio.music_bed(RATE * 40, "tense", seed=7)
    assert bed.shape == (RATE * 40, 2) and bed.dtype == np.float32 and np.isfinite(bed).all()
    assert np.array_equal(bed, audio.music_bed(RATE * 40, "tense", seed=7))
    assert not np.array_equal(bed, audio.music_bed(RATE * 40, "tense", seed=8))
    assert audio.integrated_loudness(bed) == pytest.approx(audio.MUSIC_LUFS, abs=1.0)
    assert bed[0].tolist() == [0.0, 0.0] and bed[-1].tolist() == [0.0, 0.0]  # faded in and out
    for mood in audio.MOODS:
        assert audio.music_bed(RATE, mood, seed=1).shape == (RATE, 2)
    with pytest.raises(InputError, match="mood"):
        audio.music_bed(RATE, "jazzy", seed=1)


def test_mix_places_clips_and_has_exact_length() -> None:
    clip = _tone(0.5)
    out = audio.mix([(1000, clip), (RATE * 2 - 100, clip)], None, RATE * 2)
    assert out.shape == (RATE * 2, 2)
    assert np.array_equal(out[1000 : 1000 + clip.size, 0], clip)
    assert np.array_equal(out[:1000], np.zeros((1000, 2), np.float32))
    assert np.array_equal(out[-100:, 1], clip[:100])  # cut at the end of the timeline
    with pytest.raises(ValueError):
        audio.mix([(-1, clip)], None, RATE)


def test_ducking_lowers_the_music_under_voice() -> None:
    total = RATE * 6
    music = np.repeat(_tone(6, 220, 0.1)[:, None], 2, axis=1)
    speech = _tone(2, 800, 0.3)
    out = audio.mix([(RATE * 2, speech)], music, total, duck_db=-12.0)
    bed = out[:, 0] - np.pad(speech, (RATE * 2, total - RATE * 4))  # the music alone, as mixed

    def level(start: float, end: float) -> float:
        part = bed[round(start * RATE) : round(end * RATE)]
        return 20 * math.log10(np.sqrt(np.mean(part**2)) / np.sqrt(np.mean(music[:, 0] ** 2)))

    assert level(0.5, 1.5) == pytest.approx(0.0, abs=0.1)  # before speech: untouched
    assert level(2.5, 3.5) == pytest.approx(-12.0, abs=0.5)  # under speech: ducked
    assert level(5.0, 6.0) == pytest.approx(0.0, abs=0.3)  # released afterwards
    assert level(1.99, 2.0) < -8  # anticipates the first syllable
    assert np.abs(np.diff(bed)).max() < 0.05  # no clicks from the gain changes


def test_normalise_reaches_target_and_respects_the_peak_ceiling() -> None:
    music = np.repeat(_tone(10, 330, 0.02)[:, None], 2, axis=1)
    speech = _tone(3, 500, 0.05)
    speech[::4800] = 0.9  # sharp peaks: the gain to -16 LUFS would push them far over the ceiling
    pcm = audio.mix([(RATE * 2, speech)], music, RATE * 10)
    out, report = audio.normalise_loudness(pcm, target_lufs=-16.0, true_peak_db=-1.5)
    assert report["output_lufs"] == pytest.approx(-16.0, abs=0.1)
    assert audio.integrated_loudness(out) == pytest.approx(-16.0, abs=0.1)
    assert np.abs(out).max() <= 10 ** (-1.5 / 20) + 1e-6
    assert report["peak_db"] == pytest.approx(-1.5, abs=0.05)
    assert report["measured_lufs"] == pytest.approx(audio.integrated_loudness(pcm), abs=0.01)


def test_normalise_leaves_silence_alone() -> None:
    silence = np.zeros((RATE * 3, 2), np.float32)
    out, report = audio.normalise_loudness(silence)
    assert np.array_equal(out, silence)
    assert report == {"measured_lufs": None, "gain_db": 0.0, "output_lufs": None, "peak_db": None}


@pytest.mark.parametrize("samples", [1, 1024 * 50, 2000 * 48, RATE * 12 + 777, RATE * 65 + 777])
def test_encode_aac_decodes_to_exactly_the_input_length(samples: int, tmp_path: Path) -> None:
    """Up to ~37 s take one encode; longer audio is cut into ~30 s chunks that are spliced."""
    pcm = np.repeat(_tone(samples / RATE, 440, 0.3)[:, None], 2, axis=1)[:samples]
    audio.encode_aac(pcm, tmp_path / "a.m4a")
    decoded = probe.decode_audio(tmp_path / "a.m4a")
    assert decoded.shape == (samples, 2)
    if samples > RATE:
        # Aligned (no priming offset) and clean across the splice.
        error = decoded - pcm
        assert 10 * math.log10(np.sum(pcm**2) / np.sum(error**2)) > 25
        splice = min(aac._CHUNK, samples // 2 // 1024 * 1024)
        assert np.abs(error[splice - 2048 : splice + 2048]).max() < 0.05


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts = 0

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        self.data[key] = data


def test_encode_aac_reuses_unchanged_chunks(tmp_path: Path) -> None:
    pcm = audio.music_bed(RATE * 95, "tense", seed=4)
    cache = DictCache()
    audio.encode_aac(pcm, tmp_path / "cold.m4a", cache=cache)
    assert cache.puts == 3, "95 s is three chunks of about 30 s"
    audio.encode_aac(pcm, tmp_path / "warm.m4a", cache=cache)
    assert cache.puts == 3 and sha256(tmp_path / "warm.m4a") == sha256(tmp_path / "cold.m4a")

    edited = pcm.copy()
    edited[RATE * 45 : RATE * 46] *= 0.5  # inside the second chunk only
    audio.encode_aac(edited, tmp_path / "edited.m4a", cache=cache)
    assert cache.puts == 4, "only the chunk holding the edit is encoded again"
    audio.encode_aac(edited, tmp_path / "uncached.m4a")
    assert sha256(tmp_path / "edited.m4a") == sha256(tmp_path / "uncached.m4a"), "a cache never changes bytes"


def test_encode_aac_is_deterministic(tmp_path: Path) -> None:
    pcm = audio.music_bed(RATE * 11, "calm", seed=2)
    audio.encode_aac(pcm, tmp_path / "a.m4a")
    audio.encode_aac(pcm, tmp_path / "b.m4a")
    assert sha256(tmp_path / "a.m4a") == sha256(tmp_path / "b.m4a")
    with pytest.raises(ValueError):
        audio.encode_aac(pcm[:, 0], tmp_path / "mono.m4a")


def test_read_wav_converts_to_mono_48k(tmp_path: Path) -> None:
    path = tmp_path / "stereo22k.wav"
    t = np.arange(22050) / 22050
    left = (np.sin(2 * math.pi * 300 * t) * 16000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(np.stack([left, left], axis=1).tobytes())
    pcm = audio.read_wav(path)
    assert pcm.dtype == np.float32 and pcm.shape == (RATE,)
    assert np.abs(pcm).max() == pytest.approx(16000 / 32768, abs=0.01)
    with pytest.raises(MediaError, match="read wav"):
        audio.read_wav(tmp_path / "missing.wav")


# --- espeak-ng ---------------------------------------------------------------------------------


def test_synthesize_voice(tmp_path: Path) -> None:
    require_espeak()
    assert audio.espeak_available()
    assert "1." in (audio.espeak_version() or "") and "Data at" not in (audio.espeak_version() or "")
    text = "-v x --help: lines may start with a dash."
    audio.synthesize_voice(text, "en", tmp_path / "a.wav")
    audio.synthesize_voice(text, "en", tmp_path / "b.wav")
    assert sha256(tmp_path / "a.wav") == sha256(tmp_path / "b.wav")
    with wave.open(str(tmp_path / "a.wav")) as result:
        assert (result.getframerate(), result.getnchannels(), result.getsampwidth()) == (RATE, 1, 2)
    pcm = audio.read_wav(tmp_path / "a.wav")
    assert pcm.size > RATE  # more than a second: the whole sentence was spoken, not an option
    assert audio.integrated_loudness(pcm) == pytest.approx(audio.VOICE_LUFS, abs=0.5)
    audio.synthesize_voice(text, "en", tmp_path / "fast.wav", speed_wpm=audio.MAX_WPM)
    assert audio.read_wav(tmp_path / "fast.wav").size < pcm.size


def test_synthesize_voice_reports_a_bad_voice(tmp_path: Path) -> None:
    require_espeak()
    with pytest.raises(MediaError, match="espeak-ng exited"):
        audio.synthesize_voice("hello", "zz-no-such-voice", tmp_path / "a.wav")
    with pytest.raises(InputError, match="voice name"):
        audio.synthesize_voice("hello", "--path=/etc", tmp_path / "a.wav")
    assert not (tmp_path / "a.wav").exists()


def test_missing_espeak_is_reported_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    voice.espeak_version.cache_clear()
    try:
        assert not audio.espeak_available()
        assert audio.espeak_version() is None
        with pytest.raises(MediaError, match="espeak-ng is not installed"):
            audio.synthesize_voice("hello", "en", tmp_path / "a.wav")
    finally:
        voice.espeak_version.cache_clear()
