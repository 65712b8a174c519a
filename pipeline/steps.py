"""The pipeline's steps as functions from input artifacts (by hash) to output artifacts.

``cinefleet render`` calls them in order in one process; a site's workers call the same
functions one job at a time. Each works through a :class:`~pipeline.workspace.Workspace`, so
whatever made the artifact, the bytes and the cache keys are the same.

Media jobs (voice lines, shots, the audio mix) are described as a :class:`FileJob`: the key
material that fixes their bytes and the function that makes them. A caller can compute the
key without making anything, which is how a scheduler knows a job is already done.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.canonical import digest
from pipeline.errors import GateBlocked, MediaError, PipelineError
from pipeline.media import audio, probe, shots, stills
from pipeline.media.assemble import assemble_episode
from pipeline.media.ffmpeg import VIDEO_ENCODE_ARGS, build_id
from pipeline.models import AssetManifest, Canon, Project, RenderOutput, RenderPlan, Script, ShotList
from pipeline.models.assets import License, VoiceLine
from pipeline.models.project import ProfileSettings
from pipeline.models.render import GateResult, OutputFile, PlannedShot, Profile
from pipeline.models.shotlist import Shot
from pipeline.stages.assets import Library, build_manifest
from pipeline.stages.canon_gate import DiffOutcome, apply_diffs, check_script
from pipeline.stages.captions import episode_cues, shot_cues, shot_starts, to_srt
from pipeline.stages.qa import EpisodeFacts, VoiceSpan, run_gates
from pipeline.stages.render_plan import build_plan
from pipeline.stages.script import TEMPLATE_GENERATOR, generate_script
from pipeline.stages.shotlist import plan_shots
from pipeline.store import digest_of_uri, file_sha256, uri_for
from pipeline.workspace import Workspace

#: Bumped whenever a stage's output for the same inputs would change; part of its cache key.
STAGE_VERSIONS = {"script": 1, "shotlist": 1, "voice": 1, "shot": 2, "audio": 1, "episode": 1}
FONT_SHA256 = file_sha256(Path(stills.FONT_PATH))


def voice_engine() -> str:
    """What voices this machine: 'espeak-ng <version>' or 'none' (no-voice mode)."""
    return f"espeak-ng {audio.espeak_version()}" if audio.espeak_available() else "none"


#: The tools whose build fixes a media artifact's bytes, and how this machine's build of each is read.
BUILDS: Mapping[str, Callable[[], str]] = {"ffmpeg": build_id, "voice": voice_engine}


def check_builds(named: Mapping[str, str], purpose: str) -> None:
    """Refuse to make bytes under a cache key that names another build of a tool than this machine's.

    A key names the builds the render plan recorded; bytes another build made would be cached
    under it and reused by every later run, so one episode could mix two builds (issue 9).
    """
    for tool, wanted in named.items():
        own = BUILDS[tool]()
        if own != wanted:
            raise MediaError(f"{purpose}: this machine's {tool} build {own!r} differs from {wanted!r}, the one "
                             "its cache key names; its bytes would be cached as the other build's")


# -- documents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """The documents the script step leaves behind."""

    project: str
    canon: str
    script: str
    outcomes: tuple[DiffOutcome, ...]


def write_script(ws: Workspace, project: Project, base_canon: Canon) -> Written:
    """Apply approved canon diffs, then generate the script; raises GateBlocked on a bad diff."""
    canon, outcomes = apply_diffs(base_canon, project.canon_diffs)
    project_hash = ws.put_document(project, parents=[])
    canon_hash = ws.put_document(canon, parents=[project_hash])
    script_hash, _, _ = ws.derive_document(
        "script",
        {"v": STAGE_VERSIONS["script"], "generator": TEMPLATE_GENERATOR, "project": project_hash,
         "canon": canon_hash},
        lambda: generate_script(project, canon),
        Script,
        parents=[project_hash, canon_hash],
    )
    return Written(project=project_hash, canon=canon_hash, script=script_hash, outcomes=tuple(outcomes))


def check_canon(ws: Workspace, canon_hash: str, script_hash: str) -> None:
    check_script(ws.load_document(canon_hash, Canon), ws.load_document(script_hash, Script))


def write_shotlist(ws: Workspace, script_hash: str, canon_hash: str, fps: int) -> str:
    script = ws.load_document(script_hash, Script)
    canon = ws.load_document(canon_hash, Canon)
    found, _, _ = ws.derive_document(
        "shotlist",
        {"v": STAGE_VERSIONS["shotlist"], "script": script_hash, "canon": canon_hash, "fps": fps},
        lambda: plan_shots(script, canon, fps, script_hash),
        ShotList,
        parents=[script_hash, canon_hash],
    )
    return found


def _import_image(ws: Workspace) -> Callable[[str, Path, License], str]:
    def import_image(asset_id: str, path: Path, license: License) -> str:
        found = ws.put_file(path, "Image", parents=[], params={"asset_id": asset_id},
                            license=license.model_dump(mode="json"))
        ws.registry.cache_asset(ws.tenant_id, asset_id, found, license.model_dump(mode="json"))
        return found

    return import_image


def _cached_asset(ws: Workspace) -> Callable[[str], tuple[str, License] | None]:
    def cached(asset_id: str) -> tuple[str, License] | None:
        row = ws.registry.cached_asset(ws.tenant_id, asset_id)
        if row is None or not ws.has(row.hash):
            return None
        return row.hash, License.model_validate(row.license)

    return cached


def write_manifest(ws: Workspace, shotlist_hash: str, script_hash: str, canon_hash: str, library: Library,
                   music_mood: str | None) -> str:
    shotlist = ws.load_document(shotlist_hash, ShotList)
    manifest = build_manifest(
        shotlist, shotlist_hash, ws.load_document(script_hash, Script), ws.load_document(canon_hash, Canon),
        library, _import_image(ws), _cached_asset(ws), music_mood,  # type: ignore[arg-type]
    )
    return ws.put_document(manifest, parents=[shotlist_hash])


def write_plan(ws: Workspace, profile: Profile, settings: ProfileSettings, shotlist_hash: str, manifest_hash: str,
               engine: str) -> str:
    plan = build_plan(profile, settings, ws.load_document(shotlist_hash, ShotList), shotlist_hash,
                      ws.load_document(manifest_hash, AssetManifest), manifest_hash, build_id(), engine)
    return ws.put_document(plan, parents=[manifest_hash, shotlist_hash])


# -- media jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileJob:
    """One media artifact to derive: what fixes its bytes, and how to make it."""

    stage: str
    material: dict[str, Any]
    make: Callable[[Path], None]
    kind: str
    parents: tuple[str, ...]
    suffix: str
    #: The tool builds its key names (tool -> build): only a machine with those builds may make it.
    builds: Mapping[str, str]

    def run(self, ws: Workspace) -> tuple[str, bool]:
        """The artifact, found by its key or made; made only with the builds the key names."""

        def make(target: Path) -> None:
            check_builds(self.builds, f"make {self.stage} {target.name}")
            self.make(target)

        return ws.derive_file(self.stage, self.material, make, kind=self.kind, parents=list(self.parents),
                              suffix=self.suffix)

    def key(self, ws: Workspace) -> str:
        return ws.key(self.stage, self.material)


@dataclass(frozen=True)
class Placement:
    """Where one voice line goes: its shot, its first sample, and how long it may run."""

    shot_id: str
    line: VoiceLine
    start: int
    window: int


def voice_placements(shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan) -> list[Placement]:
    if plan.audio.voice_engine == "none":
        return []
    spf = audio.SAMPLE_RATE // plan.fps
    starts = shot_starts(shotlist)
    lines = {line.line_id: line for line in manifest.vo_lines}
    return [
        Placement(shot.shot_id, lines[line.line_id], (starts[shot.shot_id] + line.start_frame) * spf,
                  (shot.frames - line.start_frame) * spf)
        for shot in shotlist.shots
        for line in shot.lines
    ]


def voice_job(line: VoiceLine, window: int, engine: str) -> FileJob:
    """Synthesise one line so that it fits its shot: faster speech if needed, never a cut."""

    def make(target: Path) -> None:
        speed = audio.DEFAULT_WPM
        audio.synthesize_voice(line.text, line.voice, target, speed_wpm=speed)
        length = len(audio.read_wav(target))
        if length > window:
            speed = min(audio.MAX_WPM, math.ceil(speed * length / window * 1.05))
            audio.synthesize_voice(line.text, line.voice, target, speed_wpm=speed)
            if len(audio.read_wav(target)) > window:
                raise PipelineError(f"voice line {line.line_id} does not fit its shot even at {speed} words per minute")

    material = {"v": STAGE_VERSIONS["voice"], "text": line.text, "voice": line.voice, "engine": engine,
                "window": window}
    return FileJob("voice", material, make, kind="VoiceLine", parents=(), suffix=".wav", builds={"voice": engine})


def shot_job(ws: Workspace, planned: PlannedShot, shot: Shot, plan: RenderPlan) -> FileJob:
    image = digest_of_uri(planned.asset_uri) if planned.asset_uri else None
    cues = shot_cues(shot)
    material = {
        "v": STAGE_VERSIONS["shot"],
        "kind": planned.kind,
        "image": image,
        "card": list(planned.card_lines) if image is None else None,
        "motion": planned.motion.model_dump(mode="json"),
        "frames": planned.frames,
        "fps": plan.fps,
        "size": [plan.width, plan.height],
        "captions": [list(cue) for cue in cues],
        "font": FONT_SHA256,
        "fade": [planned.fade_in, planned.fade_out],
        "ffmpeg": plan.ffmpeg_build,
        "encoder": list(VIDEO_ENCODE_ARGS),
    }

    def make(target: Path) -> None:
        folder = target.parent
        picture = folder / "picture.png"
        if image is None:
            stills.draw_card(list(planned.card_lines), plan.width, plan.height, picture)
        else:
            scale = 1.0 if planned.kind == "still" else shots.KEN_BURNS_HEADROOM
            stills.cover_image(ws.path(image), plan.width, plan.height, picture, scale=scale)
        captions = []
        for number, (start, end, text) in enumerate(cues):
            strip = folder / f"caption{number}.png"
            stills.draw_caption(text, plan.width, strip)
            captions.append(shots.CaptionCue(start_frame=start, end_frame=end, image=strip))
        spec = shots.ShotSpec(
            kind=planned.kind, image=picture, frames=planned.frames, fps=plan.fps, width=plan.width,
            height=plan.height, zoom_from=planned.motion.zoom_from, zoom_to=planned.motion.zoom_to,
            pan=(planned.motion.pan_x, planned.motion.pan_y), captions=tuple(captions),
            fade_in=planned.fade_in, fade_out=planned.fade_out,
        )
        shots.render_shot(spec, target)

    return FileJob("shot", material, make, kind="ShotClip", parents=(image,) if image else (), suffix=".mp4",
                   builds={"ffmpeg": plan.ffmpeg_build})


class ChunkCache:
    """Encoded AAC chunks kept in the workspace, so an edit re-encodes only the chunks it touched."""

    STAGE = "aac_chunk"

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def get(self, key: str) -> bytes | None:
        found = self.ws.lookup(self.STAGE, key)
        return None if found is None else self.ws.store.read_bytes(self.ws.tenant_id, found)

    def put(self, key: str, data: bytes) -> None:
        self.ws.remember(self.STAGE, key, self.ws.put_bytes(data, "AacChunk", parents=[], params={"key": key}))


def audio_job(ws: Workspace, voices: list[tuple[int, str]], shotlist: ShotList, plan: RenderPlan,
              project_id: str) -> FileJob:
    """Mix the voice lines (start sample, wav hash) over the music bed and encode the episode's AAC."""
    total = shotlist.total_frames * (audio.SAMPLE_RATE // plan.fps)
    mood = plan.audio.music_mood
    seed = int(digest(project_id)[:8], 16)
    material = {
        "v": STAGE_VERSIONS["audio"],
        "voice": [[start, wav] for start, wav in voices],
        "music": mood,
        "seed": seed,
        "total": total,
        "audio": plan.audio.model_dump(mode="json"),
        "ffmpeg": plan.ffmpeg_build,
    }

    def make(target: Path) -> None:
        clips = [(start, audio.read_wav(ws.path(wav))) for start, wav in voices]
        music = audio.music_bed(total, mood, seed) if mood else None
        pcm = audio.mix(clips, music, total, duck_db=plan.audio.duck_db)
        pcm, _report = audio.normalise_loudness(pcm, plan.audio.target_lufs, plan.audio.true_peak_db)
        audio.encode_aac(pcm, target, cache=ChunkCache(ws))

    return FileJob("audio", material, make, kind="AudioMix", parents=tuple(wav for _, wav in voices),
                   suffix=".m4a", builds={"ffmpeg": plan.ffmpeg_build})


# -- finishing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    episode: str
    captions: str
    output: str
    document: RenderOutput


def finish(ws: Workspace, project: Project, profile: Profile, lineage: dict[str, str], clips: list[str],
           audio_hash: str, voice: tuple[VoiceSpan, ...]) -> Finished:
    """Captions, assembly, the QA gates and the RenderOutput. Raises GateBlocked when a gate fails.

    The episode is stored only once every gate has passed.
    """
    shotlist = ws.load_document(lineage["ShotList"], ShotList)
    manifest = ws.load_document(lineage["AssetManifest"], AssetManifest)
    plan = ws.load_document(lineage["RenderPlan"], RenderPlan)
    srt = to_srt(episode_cues(shotlist), shotlist.fps).encode("utf-8")
    captions = ws.put_bytes(srt, "Captions", parents=[lineage["ShotList"]])
    key = ws.key("episode", {"v": STAGE_VERSIONS["episode"], "clips": clips, "audio": audio_hash,
                             "ffmpeg": plan.ffmpeg_build})
    found = ws.lookup("episode", key)
    scratch = ws.store.scratch()
    try:
        if found is None:
            check_builds({"ffmpeg": plan.ffmpeg_build}, "assemble the episode")
            candidate = scratch / "episode.mp4"
            assemble_episode([ws.path(c) for c in clips], ws.path(audio_hash), candidate)
        else:
            candidate = ws.path(found)
        gates = run_gates(_measure(ws, project, candidate, shotlist, manifest, plan, srt, voice))
        failed = [gate for gate in gates if not gate.passed]
        if failed:
            raise GateBlocked(failed[0].gate, failed[0].rule, failed[0].facts)
        if found is None:
            found = ws.put_file(candidate, "Episode", parents=[*clips, audio_hash], params={"key": key}, owned=True)
            ws.remember("episode", key, found)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    document = _output(ws, project, profile, plan, shotlist, manifest, lineage, found, captions, audio_hash, gates)
    output = ws.put_document(document, parents=[lineage["RenderPlan"], found, captions, audio_hash])
    return Finished(episode=found, captions=captions, output=output, document=document)


def _measure(ws: Workspace, project: Project, episode: Path, shotlist: ShotList, manifest: AssetManifest,
             plan: RenderPlan, srt: bytes, voice: tuple[VoiceSpan, ...]) -> EpisodeFacts:
    pcm = probe.decode_audio(episode)
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    loudness = audio.integrated_loudness(pcm) if peak > 0 else None
    images = {digest_of_uri(s.asset_uri) for s in plan.shots if s.asset_uri}
    return EpisodeFacts(
        target=project.target_duration,
        shotlist=shotlist,
        manifest=manifest,
        plan=plan,
        frames=probe.count_video_frames(episode),
        audio_samples=len(pcm),
        sample_rate=audio.SAMPLE_RATE,
        loudness_lufs=loudness,
        peak_db=20 * math.log10(peak) if peak > 0 else None,
        srt_text=srt.decode("utf-8"),
        voice=voice,
        stored_images=frozenset(h for h in images if ws.has(h)),
    )


def _output(ws: Workspace, project: Project, profile: Profile, plan: RenderPlan, shotlist: ShotList,
            manifest: AssetManifest, lineage: dict[str, str], episode: str, captions: str, audio_hash: str,
            gates: tuple[GateResult, ...]) -> RenderOutput:
    def output_file(found: str) -> OutputFile:
        return OutputFile(uri=uri_for(found), sha256=found, bytes=ws.path(found).stat().st_size)

    return RenderOutput.create(
        project_id=project.id,
        tenant_id=project.tenant_id,
        site_id=ws.site_id,
        profile=profile,
        video=output_file(episode),
        captions=output_file(captions),
        audio=output_file(audio_hash),
        frames=shotlist.total_frames,
        audio_samples=shotlist.total_frames * (audio.SAMPLE_RATE // plan.fps),
        duration_s=round(shotlist.total_frames / plan.fps, 6),
        lineage=lineage,
        qa=gates,
        placeholders=tuple(a.asset_id for a in manifest.assets if a.resolved.placeholder),
        voice_engine=plan.audio.voice_engine,
        ffmpeg_build=plan.ffmpeg_build,
    )
