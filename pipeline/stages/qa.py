"""Quality gates before publish (spec §15, §25.4).

Each gate is a function from the facts measured on the assembled episode to a
:class:`GateResult`; ``GATES`` lists them in the order they run. Any failure blocks
publishing, and its result names the rule and the facts that broke it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.models import AssetManifest, RenderPlan, ShotList
from pipeline.models.project import TargetDuration
from pipeline.models.render import GateResult
from pipeline.stages.captions import episode_cues, parse_srt, shot_starts

#: How far the measured integrated loudness may sit from the target (EBU R128 allows ±1 LU).
LOUDNESS_TOLERANCE_LU = 1.0
#: Highest sample peak allowed after normalisation, in dBFS.
PEAK_CEILING_DB = -1.0


@dataclass(frozen=True)
class VoiceSpan:
    shot_id: str
    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class EpisodeFacts:
    """What was measured on the assembled file and the inputs it was built from."""

    target: TargetDuration
    shotlist: ShotList
    manifest: AssetManifest
    plan: RenderPlan
    frames: int
    audio_samples: int
    sample_rate: int
    loudness_lufs: float | None
    peak_db: float | None
    srt_text: str
    voice: tuple[VoiceSpan, ...]
    stored_images: frozenset[str]

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.plan.fps


def _result(gate: str, problems: list[str], rule: str, ok_facts: str) -> GateResult:
    if problems:
        return GateResult(gate=gate, passed=False, rule=rule, facts="; ".join(problems))
    return GateResult(gate=gate, passed=True, rule=rule, facts=ok_facts)


def integrity(facts: EpisodeFacts) -> GateResult:
    want_frames = facts.shotlist.total_frames
    want_samples = want_frames * facts.samples_per_frame
    problems = []
    if facts.frames != want_frames:
        problems.append(f"video has {facts.frames} frames, the locked timeline has {want_frames}")
    if facts.audio_samples != want_samples:
        problems.append(f"audio has {facts.audio_samples} samples, the timeline needs {want_samples}")
    return _result("integrity", problems, "frames and samples match the timing lock",
                   f"{facts.frames} frames, {facts.audio_samples} samples")


def runtime(facts: EpisodeFacts) -> GateResult:
    seconds = facts.frames / facts.plan.fps
    low, high = facts.target.window
    problems = [] if low <= seconds <= high else [
        f"runtime {seconds:.2f} s is outside the target window {low:.2f}-{high:.2f} s "
        f"({facts.target.seconds:g} s ± {facts.target.tolerance:.0%})"
    ]
    return _result("runtime", problems, "runtime within the target window", f"runtime {seconds:.2f} s in "
                   f"{low:.2f}-{high:.2f} s")


def caption_sync(facts: EpisodeFacts) -> GateResult:
    fps = facts.plan.fps
    expected = episode_cues(facts.shotlist)
    problems: list[str] = []
    try:
        written = parse_srt(facts.srt_text)
    except ValueError as exc:
        return _result("caption_sync", [f"captions.srt unreadable: {exc}"], "captions follow the timeline", "")
    if len(written) != len(expected):
        problems.append(f"captions.srt has {len(written)} cues, the timeline has {len(expected)}")
    for number, (cue, (start_ms, end_ms, text)) in enumerate(zip(expected, written, strict=False), start=1):
        want = (cue.start_frame * 1000 // fps, cue.end_frame * 1000 // fps)
        if (start_ms, end_ms) != want or text != cue.text:
            problems.append(
                f"cue {number} ({cue.shot_id}) is {start_ms}-{end_ms} ms {text!r}, "
                f"timeline says {want[0]}-{want[1]} ms {cue.text!r}"
            )
    ends = [end for _, end, _ in written]
    starts = [start for start, _, _ in written]
    if any(s < e for s, e in zip(starts[1:], ends[:-1], strict=False)):
        problems.append("cues overlap")
    duration_ms = facts.frames * 1000 // fps
    if ends and max(ends) > duration_ms:
        problems.append(f"a cue ends at {max(ends)} ms, after the episode ({duration_ms} ms)")
    spf = facts.samples_per_frame
    starts_by_shot = shot_starts(facts.shotlist)
    frames_by_shot = {shot.shot_id: shot.frames for shot in facts.shotlist.shots}
    for span in facts.voice:
        shot_start = starts_by_shot[span.shot_id] * spf
        shot_end = shot_start + frames_by_shot[span.shot_id] * spf
        if span.start_sample < shot_start or span.end_sample > shot_end:
            problems.append(
                f"voice for {span.shot_id} spans samples {span.start_sample}-{span.end_sample}, "
                f"outside its shot {shot_start}-{shot_end}"
            )
    return _result("caption_sync", problems, "captions and voice follow the locked timeline",
                   f"{len(written)} cues, {len(facts.voice)} voice lines in their shots")


def loudness(facts: EpisodeFacts) -> GateResult:
    target = facts.plan.audio.target_lufs
    rule = f"integrated loudness {target:g} LUFS ± {LOUDNESS_TOLERANCE_LU:g} LU, peak ≤ {PEAK_CEILING_DB:g} dBFS"
    if facts.loudness_lufs is None or not math.isfinite(facts.loudness_lufs):
        voiced = facts.plan.audio.voice_engine != "none" and bool(facts.manifest.vo_lines)
        if not voiced and facts.plan.audio.music_mood is None:
            return _result("loudness", [], rule, "silent by design: no voice and no music")
        return _result("loudness", ["the audio is silent although voice or music was planned"], rule, "")
    problems = []
    if abs(facts.loudness_lufs - target) > LOUDNESS_TOLERANCE_LU:
        problems.append(f"measured {facts.loudness_lufs:.2f} LUFS, target {target:g} LUFS")
    if facts.peak_db is not None and facts.peak_db > PEAK_CEILING_DB:
        problems.append(f"sample peak {facts.peak_db:.2f} dBFS above {PEAK_CEILING_DB:g} dBFS")
    measured = f"measured {facts.loudness_lufs:.2f} LUFS, peak {facts.peak_db:.2f} dBFS"
    return _result("loudness", problems, rule, measured)


def missing_assets(facts: EpisodeFacts) -> GateResult:
    problems = []
    placeholders = []
    for shot in facts.plan.shots:
        if shot.asset_uri is None:
            placeholders.append(shot.asset_id)
            if not shot.card_lines:
                problems.append(f"shot {shot.shot_id} has neither an image nor a placeholder card")
        elif shot.asset_uri.rsplit("/", 1)[-1] not in facts.stored_images:
            problems.append(f"shot {shot.shot_id} points at {shot.asset_uri}, which is not in the store")
    flagged = {a.asset_id for a in facts.manifest.assets if a.resolved.placeholder and a.resolved.flags}
    for asset_id in sorted(set(placeholders) - flagged):
        problems.append(f"asset {asset_id} became a placeholder without a flag in the manifest")
    summary = f"placeholders: {', '.join(sorted(set(placeholders)))}" if placeholders else "no placeholders"
    return _result("missing_assets", problems, "every shot has an image or a flagged placeholder", summary)


def rights(facts: EpisodeFacts) -> GateResult:
    problems = []
    for asset in facts.manifest.assets:
        license = asset.resolved.license
        if license.license_type == "CC-BY" and not license.attribution.strip():
            problems.append(f"asset {asset.asset_id} is CC-BY without an attribution")
        if license.license_type == "commercial_licensed" and not license.purchase_record.strip():
            problems.append(f"asset {asset.asset_id} is commercial_licensed without a purchase_record")
    return _result("rights", problems, "every asset has complete licence metadata (§25.2)",
                   f"{len(facts.manifest.assets)} assets licensed")


GATES: tuple[Callable[[EpisodeFacts], GateResult], ...] = (
    integrity,
    runtime,
    caption_sync,
    loudness,
    missing_assets,
    rights,
)


def run_gates(facts: EpisodeFacts) -> tuple[GateResult, ...]:
    return tuple(gate(facts) for gate in GATES)
