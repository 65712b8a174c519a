"""Script → ShotList: the film adaptation with a small set of shot templates (spec §8).

Timing is decided here and locked: every shot gets an integer number of frames estimated from
its text, never from a synthesised voice, so the timeline is the same whether or not a TTS
engine is installed and a later render can never shift it.

Templates:
- ``establishing``: the scene's background with a slow move, titled with the scene heading;
- ``closeup``: a speaker's first line in the scene, on their portrait;
- ``two_shot``: the speaker's later lines, on the scene background, held still.
"""

from __future__ import annotations

import math

from pipeline.canonical import digest
from pipeline.models import Canon, Script, ShotList
from pipeline.models.script import Scene, ScriptLine
from pipeline.models.shotlist import AudioIntent, Movement, Shot, ShotLine, ShotTemplate

#: Speaking rate the timing assumes; slower than espeak-ng's default so a voice fits its shot.
WORDS_PER_SECOND = 2.4
LEAD_SECONDS = 0.25
TAIL_SECONDS = 0.6
MIN_SPEECH_SECONDS = 1.0
ESTABLISHING_BASE_SECONDS = 2.5
ACTION_WORDS_PER_SECOND = 3.0
ESTABLISHING_RANGE_SECONDS = (3.0, 20.0)

#: Establishing moves cycle by scene so consecutive scenes do not repeat the same motion.
ESTABLISHING_MOVES: tuple[Movement, ...] = ("push_in", "pan_right", "pull_out", "pan_left")


def speech_seconds(text: str) -> float:
    return max(MIN_SPEECH_SECONDS, len(text.split()) / WORDS_PER_SECOND)


def timing_lock_hash(fps: int, shots: tuple[Shot, ...]) -> str:
    return digest({"fps": fps, "shots": [[shot.shot_id, shot.frames] for shot in shots]})


def _establishing(scene: Scene, canon: Canon, index: int, fps: int) -> Shot:
    location = canon.location(scene.location_id)
    words = sum(len(action.split()) for action in scene.actions)
    low, high = ESTABLISHING_RANGE_SECONDS
    seconds = min(high, max(low, ESTABLISHING_BASE_SECONDS + words / ACTION_WORDS_PER_SECOND))
    return Shot(
        shot_id=f"{scene.id}-est",
        scene_id=scene.id,
        template="establishing",
        frames=math.ceil(seconds * fps),
        framing="wide",
        movement=ESTABLISHING_MOVES[index % len(ESTABLISHING_MOVES)],
        characters=scene.characters_present,
        environment_notes=location.description if location else "",
        action_beats=scene.actions,
        audio=AudioIntent(music_mood=scene.mood),
        visual_asset=location.background_asset if location else f"bg_{scene.location_id}",
        caption_card=(scene.heading,),
    )


def _dialogue(scene: Scene, line: ScriptLine, canon: Canon, first_for_speaker: bool, fps: int) -> Shot:
    lead = math.ceil(LEAD_SECONDS * fps)
    speech = math.ceil(speech_seconds(line.text) * fps)
    tail = math.ceil(TAIL_SECONDS * fps)
    template: ShotTemplate
    if first_for_speaker:
        character = canon.character(line.speaker_id)
        template, framing = "closeup", "close-up"
        asset = character.portrait_asset if character else f"char_{line.speaker_id}"
    else:
        location = canon.location(scene.location_id)
        template, framing = "two_shot", "medium two-shot"
        asset = location.background_asset if location else f"bg_{scene.location_id}"
    return Shot(
        shot_id=line.line_id,
        scene_id=scene.id,
        template=template,
        frames=lead + speech + tail,
        framing=framing,
        movement="static",
        characters=(line.speaker_id,),
        expressions=(line.emotion,),
        lines=(
            ShotLine(
                line_id=line.line_id,
                speaker_id=line.speaker_id,
                text=line.text,
                start_frame=lead,
                end_frame=lead + speech,
            ),
        ),
        audio=AudioIntent(vo_refs=(line.line_id,), music_mood=scene.mood),
        visual_asset=asset,
    )


def plan_shots(script: Script, canon: Canon, fps: int, script_hash: str) -> ShotList:
    """Break every scene into an establishing shot and one shot per dialogue line."""
    shots: list[Shot] = []
    for index, scene in enumerate(script.scenes):
        shots.append(_establishing(scene, canon, index, fps))
        speakers: set[str] = set()
        for line in scene.dialogue:
            shots.append(_dialogue(scene, line, canon, line.speaker_id not in speakers, fps))
            speakers.add(line.speaker_id)
    frozen = tuple(shots)
    return ShotList.create(
        script_hash=script_hash,
        fps=fps,
        shots=frozen,
        total_frames=sum(shot.frames for shot in frozen),
        timing_lock_hash=timing_lock_hash(fps, frozen),
    )
