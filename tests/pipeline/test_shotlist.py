"""Script → ShotList: integer frames, a stable timing lock, captions that follow the timeline."""

from __future__ import annotations

import pytest

from pipeline.canonical import model_bytes
from pipeline.stages.captions import episode_cues, parse_srt, shot_starts, to_srt
from tests.pipeline.conftest import pilot_shotlist


def test_pilot_has_six_to_twelve_shots_with_integer_frames() -> None:
    shotlist = pilot_shotlist()
    assert 6 <= len(shotlist.shots) <= 12
    assert all(isinstance(shot.frames, int) and shot.frames > 0 for shot in shotlist.shots)
    assert shotlist.total_frames == sum(shot.frames for shot in shotlist.shots)
    assert len({shot.shot_id for shot in shotlist.shots}) == len(shotlist.shots)
    assert {shot.template for shot in shotlist.shots} >= {"establishing", "closeup"}


def test_timing_lock_is_stable_across_reruns() -> None:
    first, second = pilot_shotlist(), pilot_shotlist()
    assert model_bytes(first) == model_bytes(second)
    assert first.timing_lock_hash == second.timing_lock_hash


def test_timing_lock_moves_with_timing_only() -> None:
    base = pilot_shotlist()
    longer = pilot_shotlist(edit=(0, 0, "The light holds until every single boat in the whole fleet is home tonight."))
    assert longer.timing_lock_hash != base.timing_lock_hash
    changed = [a.shot_id for a, b in zip(base.shots, longer.shots, strict=True) if a != b]
    assert changed == ["gull-point-l1"], "only the edited line's shot changes"
    same_length = pilot_shotlist(edit=(0, 0, "The lamp holds until every ship is home."))
    assert same_length.timing_lock_hash == base.timing_lock_hash, "same word count, same timing"


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_captions_round_trip_through_srt(fps: int) -> None:
    shotlist = pilot_shotlist(fps=fps)
    cues = episode_cues(shotlist)
    parsed = parse_srt(to_srt(cues, fps))
    assert [(c.start_frame * 1000 // fps, c.end_frame * 1000 // fps, c.text) for c in cues] == parsed
    starts = shot_starts(shotlist)
    for cue in cues:
        shot = next(s for s in shotlist.shots if s.shot_id == cue.shot_id)
        assert starts[shot.shot_id] <= cue.start_frame < cue.end_frame <= starts[shot.shot_id] + shot.frames


def test_malformed_srt_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed SRT"):
        parse_srt("1\n00:00:01 --> 00:00:02\nhello\n")


def test_line_breaks_in_dialogue_keep_the_srt_readable() -> None:
    shotlist = pilot_shotlist(edit=(0, 0, "Hold the light.\n\nEvery   boat\nis home."))
    parsed = parse_srt(to_srt(episode_cues(shotlist), 24))
    assert "Hold the light. Every boat is home." in [text for _, _, text in parsed]
    assert len(parsed) == len(episode_cues(pilot_shotlist()))
    blank = pilot_shotlist(edit=(0, 0, " \n "))
    assert len(episode_cues(blank)) == len(episode_cues(shotlist)) - 1, "a line with no words has no cue"
