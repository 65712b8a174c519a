"""Captions from the locked timeline: one cue per burned-in caption, in episode frames.

The same cues are burned into the shots and written as ``captions.srt``, so the sidecar and
the picture can never disagree; the QA gate re-reads the written file to prove it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.models import ShotList
from pipeline.models.shotlist import Shot


@dataclass(frozen=True)
class Cue:
    shot_id: str
    start_frame: int
    end_frame: int
    text: str


def shot_starts(shotlist: ShotList) -> dict[str, int]:
    starts: dict[str, int] = {}
    position = 0
    for shot in shotlist.shots:
        starts[shot.shot_id] = position
        position += shot.frames
    return starts


def shot_cues(shot: Shot) -> list[tuple[int, int, str]]:
    """A shot's captions in shot-local frames: its title card text, else its dialogue.

    Whitespace is collapsed to single spaces, as the burned-in strip shows it, and a line with
    no words gets no cue: a line break (let alone a blank line) in an author's text would
    otherwise break the SRT block and block the run at the caption gate.
    """
    if shot.caption_card:
        cues = [(0, shot.frames, _one_line(" ".join(shot.caption_card)))]
    else:
        cues = [(line.start_frame, line.end_frame, _one_line(line.text)) for line in shot.lines]
    return [cue for cue in cues if cue[2]]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def episode_cues(shotlist: ShotList) -> list[Cue]:
    starts = shot_starts(shotlist)
    return [
        Cue(shot.shot_id, starts[shot.shot_id] + start, starts[shot.shot_id] + end, text)
        for shot in shotlist.shots
        for start, end, text in shot_cues(shot)
    ]


def _timestamp(frame: int, fps: int) -> str:
    millis = frame * 1000 // fps
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


def to_srt(cues: list[Cue], fps: int) -> str:
    blocks = [
        f"{number}\n{_timestamp(cue.start_frame, fps)} --> {_timestamp(cue.end_frame, fps)}\n{cue.text}\n"
        for number, cue in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")


def parse_srt(text: str) -> list[tuple[int, int, str]]:
    """(start_ms, end_ms, text) per cue; raises ValueError on a malformed block."""
    cues = []
    for block in filter(None, (b.strip("\n") for b in text.split("\n\n"))):
        lines = block.split("\n")
        match = SRT_TIME.match(lines[1]) if len(lines) >= 3 else None
        if match is None:
            raise ValueError(f"malformed SRT block: {block[:60]!r}")
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups())
        start = ((h1 * 60 + m1) * 60 + s1) * 1000 + ms1
        end = ((h2 * 60 + m2) * 60 + s2) * 1000 + ms2
        cues.append((start, end, "\n".join(lines[2:])))
    return cues
