"""The single-process render: project file → every artifact → a published episode.

Stages run in order; the media work (voice lines, shots, the audio mix) runs on a thread pool
of ``workers`` ffmpeg processes. Each stage goes through the workspace, so whatever an earlier
run finished is reused and an interrupted render resumes where it stopped. Nothing is published
to the output folder until every gate has passed.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.canonical import digest
from pipeline.documents import LoadedProject, load_project
from pipeline.errors import GateBlocked, InputError, MediaError, PipelineError
from pipeline.media import audio, probe, shots, stills
from pipeline.media.assemble import assemble_episode
from pipeline.media.ffmpeg import VIDEO_ENCODE_ARGS, build_id
from pipeline.models import AssetManifest, Canon, RenderOutput, RenderPlan, RunSummary, Script, ShotList
from pipeline.models.assets import License, VoiceLine
from pipeline.models.project import ProfileSettings
from pipeline.models.render import GateResult, OutputFile, PlannedShot, Profile
from pipeline.models.shotlist import Shot
from pipeline.models.summary import RunError, StageTiming
from pipeline.progress import Progress, Silent
from pipeline.stages.assets import Library, build_manifest, open_library
from pipeline.stages.canon_gate import apply_diffs, check_script
from pipeline.stages.captions import episode_cues, shot_cues, shot_starts, to_srt
from pipeline.stages.qa import EpisodeFacts, VoiceSpan, run_gates
from pipeline.stages.render_plan import build_plan, check_profile
from pipeline.stages.script import TEMPLATE_GENERATOR, generate_script
from pipeline.stages.shotlist import plan_shots
from pipeline.store import atomic_copy, atomic_write, digest_of_uri, file_sha256, uri_for
from pipeline.workspace import Workspace

#: Bumped whenever a stage's output for the same inputs would change; part of its cache key.
STAGE_VERSIONS = {"script": 1, "shotlist": 1, "voice": 1, "shot": 1, "audio": 1, "episode": 1}
FONT_SHA256 = file_sha256(Path(stills.FONT_PATH))

PUBLISHED = (
    "Script.json",
    "ShotList.json",
    "AssetManifest.json",
    "RenderPlan.json",
    "RenderOutput.json",
    "episode.mp4",
    "captions.srt",
    "run_summary.json",
)


@dataclass(frozen=True)
class RenderRequest:
    project: Path
    out: Path
    store: Path
    profile: str = "preview_local"
    workers: int = 2
    site_id: str = "local"


@dataclass(frozen=True)
class RenderResult:
    summary: RunSummary
    output: RenderOutput | None
    blocked: GateBlocked | None = None


def render(request: RenderRequest, progress: Progress | None = None) -> RenderResult:
    """Render a project; raises :class:`InputError` before writing anything when input is bad."""
    progress = progress or Silent()
    profile = check_profile(request.profile)
    if request.workers < 1:
        raise InputError(f"--workers: value {request.workers}: expected an integer ≥ 1")
    for option, folder in (("--out", request.out), ("--store", request.store)):
        _check_folder(option, Path(folder))
    loaded = load_project(request.project)
    settings = loaded.project.render_profiles.get(profile, ProfileSettings())
    library = open_library(loaded.library, "assets.library", loaded.path)
    workspace = Workspace(request.store, loaded.project.tenant_id, request.site_id)
    run = _Run(request, loaded, workspace, progress)
    try:
        return run.execute(profile, settings, library)
    finally:
        workspace.close()


def _check_folder(option: str, folder: Path) -> None:
    """Refuse now a folder that could not be created or written, rather than after the render."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise InputError(f"{option}: value {str(folder)!r}: expected a folder, found a file{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option}: value {str(folder)!r}: expected a folder you can write to ({existing} is not)")


class _ChunkCache:
    """Encoded AAC chunks kept in the workspace, so an edit re-encodes only the chunks it touched."""

    STAGE = "aac_chunk"

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def get(self, key: str) -> bytes | None:
        found = self.ws.lookup(self.STAGE, key)
        return None if found is None else self.ws.store.read_bytes(self.ws.tenant_id, found)

    def put(self, key: str, data: bytes) -> None:
        self.ws.remember(self.STAGE, key, self.ws.put_bytes(data, "AacChunk", parents=[], params={"key": key}))


class _Run:
    def __init__(self, request: RenderRequest, loaded: LoadedProject, ws: Workspace, progress: Progress) -> None:
        self.request = request
        self.loaded = loaded
        self.project = loaded.project
        self.ws = ws
        self.progress = progress
        self.timings: list[StageTiming] = []
        self.started = time.perf_counter()
        self.shots_rendered = 0
        self.shots_reused = 0
        self.project_hash = ""
        self.current_stage = ""
        self.voice_engine = f"espeak-ng {audio.espeak_version()}" if audio.espeak_available() else "none"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, object]]:
        """Time a stage and report it; the body fills in ``output`` and cache facts."""
        self.current_stage = name
        began = time.perf_counter()
        hits_before = sum(self.ws.hits.values())
        misses_before = sum(self.ws.misses.values())
        facts: dict[str, object] = {}
        yield facts
        seconds = time.perf_counter() - began
        hits = sum(self.ws.hits.values()) - hits_before
        misses = sum(self.ws.misses.values()) - misses_before
        self.timings.append(
            StageTiming(stage=name, seconds=round(seconds, 3), cache_hits=hits, cache_misses=misses,
                        output_hash=facts.get("output"))  # type: ignore[arg-type]
        )
        self.progress.stage(name, seconds, cached=misses == 0 and hits > 0, detail=str(facts.get("detail", "")))

    # -- the run ---------------------------------------------------------------------------

    def execute(self, profile: Profile, settings: ProfileSettings, library: Library) -> RenderResult:
        ws, project = self.ws, self.project
        try:
            with self.stage("canon") as facts:
                canon, outcomes = apply_diffs(self.loaded.canon, project.canon_diffs)
                project_hash = self.project_hash = ws.put_document(project, parents=[])
                canon_hash = ws.put_document(canon, parents=[project_hash])
                facts["output"] = canon_hash
                facts["detail"] = ", ".join(f"{o.diff_id}:{o.outcome}" for o in outcomes)
            with self.stage("script") as facts:
                script_hash, script, _ = ws.derive_document(
                    "script",
                    {"v": STAGE_VERSIONS["script"], "generator": TEMPLATE_GENERATOR, "project": project_hash,
                     "canon": canon_hash},
                    lambda: generate_script(project, canon),
                    Script,
                    parents=[project_hash, canon_hash],
                )
                facts["output"] = script_hash
            with self.stage("canon_gate") as facts:
                check_script(canon, script)
                facts["detail"] = "no contradictions"
            return self._render_media(profile, settings, library, canon, canon_hash, script, script_hash)
        except GateBlocked as blocked:
            return self._blocked(blocked)
        except PipelineError as error:
            self._failed(error)
            raise

    def _render_media(
        self, profile: Profile, settings: ProfileSettings, library: Library, canon: Canon, canon_hash: str,
        script: Script, script_hash: str,
    ) -> RenderResult:
        ws, project = self.ws, self.project
        with self.stage("shotlist") as facts:
            shotlist_hash, shotlist, _ = ws.derive_document(
                "shotlist",
                {"v": STAGE_VERSIONS["shotlist"], "script": script_hash, "canon": canon_hash, "fps": settings.fps},
                lambda: plan_shots(script, canon, settings.fps, script_hash),
                ShotList,
                parents=[script_hash, canon_hash],
            )
            facts["output"] = shotlist_hash
            facts["detail"] = f"{len(shotlist.shots)} shots, {shotlist.total_frames} frames"
        with self.stage("assets") as facts:
            manifest = build_manifest(
                shotlist, shotlist_hash, script, canon, library, self._import_image, self._cached_asset,
                project.music.mood if project.music.enabled else None,
            )
            manifest_hash = ws.put_document(manifest, parents=[shotlist_hash])
            facts["output"] = manifest_hash
            placeholders = [a.asset_id for a in manifest.assets if a.resolved.placeholder]
            facts["detail"] = f"{len(manifest.assets)} assets, placeholders: {', '.join(placeholders) or 'none'}"
        with self.stage("render_plan") as facts:
            plan = build_plan(profile, settings, shotlist, shotlist_hash, manifest, manifest_hash, build_id(),
                              self.voice_engine)
            plan_hash = ws.put_document(plan, parents=[manifest_hash, shotlist_hash])
            facts["output"] = plan_hash
        with self.stage("media") as facts:
            clip_hashes, audio_hash, voice_spans = self._media(shotlist, manifest, plan)
            facts["detail"] = f"{self.shots_rendered} shots rendered, {self.shots_reused} reused"
        with self.stage("captions") as facts:
            srt = to_srt(episode_cues(shotlist), shotlist.fps).encode("utf-8")
            captions_hash = ws.put_bytes(srt, "Captions", parents=[shotlist_hash])
            facts["output"] = captions_hash
        with self.stage("assemble") as facts:
            episode_hash, gates = self._assemble_and_check(
                shotlist, manifest, plan, clip_hashes, audio_hash, srt, voice_spans
            )
            facts["output"] = episode_hash
        lineage = {
            "Project": self.project_hash, "Canon": canon_hash, "Script": script_hash, "ShotList": shotlist_hash,
            "AssetManifest": manifest_hash, "RenderPlan": plan_hash,
        }
        output = self._output(profile, plan, shotlist, manifest, lineage, episode_hash, captions_hash, audio_hash,
                              gates)
        output_hash = ws.put_document(output, parents=[plan_hash, episode_hash, captions_hash, audio_hash])
        summary = self._summary("completed", output_hash=output_hash)
        self._publish(
            {
                "Script.json": ws.path(script_hash),
                "ShotList.json": ws.path(shotlist_hash),
                "AssetManifest.json": ws.path(manifest_hash),
                "RenderPlan.json": ws.path(plan_hash),
                "RenderOutput.json": ws.path(output_hash),
                "captions.srt": ws.path(captions_hash),
                "episode.mp4": ws.path(episode_hash),
            },
            summary,
        )
        return RenderResult(summary=summary, output=output)

    # -- assets ----------------------------------------------------------------------------

    def _import_image(self, asset_id: str, path: Path, license: License) -> str:
        found = self.ws.put_file(path, "Image", parents=[], params={"asset_id": asset_id},
                                 license=license.model_dump(mode="json"))
        self.ws.registry.cache_asset(self.ws.tenant_id, asset_id, found, license.model_dump(mode="json"))
        return found

    def _cached_asset(self, asset_id: str) -> tuple[str, License] | None:
        row = self.ws.registry.cached_asset(self.ws.tenant_id, asset_id)
        if row is None or not self.ws.has(row.hash):
            return None
        return row.hash, License.model_validate(row.license)

    # -- media -----------------------------------------------------------------------------

    def _media(
        self, shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan
    ) -> tuple[list[str], str, tuple[VoiceSpan, ...]]:
        by_id = {shot.shot_id: shot for shot in shotlist.shots}
        with ThreadPoolExecutor(max_workers=self.request.workers, thread_name_prefix="render") as pool:
            audio_future = pool.submit(self._audio, shotlist, manifest, plan)
            futures: dict[Future[tuple[str, bool]], str] = {
                pool.submit(self._shot, planned, by_id[planned.shot_id], plan): planned.shot_id
                for planned in plan.shots
            }
            clip_of: dict[str, str] = {}
            began = time.perf_counter()
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    shot_id = futures[future]
                    clip_of[shot_id], cached = future.result()
                    if cached:
                        self.shots_reused += 1
                    else:
                        self.shots_rendered += 1
                    self.progress.shot(done, len(futures), shot_id, time.perf_counter() - began, cached)
                audio_hash, voice_spans = audio_future.result()
            except BaseException:
                # Without this, leaving the pool waits for every queued shot: a failed shot or a
                # Ctrl-C would only be reported once the whole episode had been rendered.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [clip_of[shot.shot_id] for shot in plan.shots], audio_hash, voice_spans

    def _shot(self, planned: PlannedShot, shot: Shot, plan: RenderPlan) -> tuple[str, bool]:
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
                stills.cover_image(self.ws.path(image), plan.width, plan.height, picture, scale=scale)
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

        parents = [image] if image else []
        return self.ws.derive_file("shot", material, make, kind="ShotClip", parents=parents, suffix=".mp4")

    def _audio(
        self, shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan
    ) -> tuple[str, tuple[VoiceSpan, ...]]:
        spf = audio.SAMPLE_RATE // plan.fps
        starts = shot_starts(shotlist)
        total = shotlist.total_frames * spf
        lines = {line.line_id: line for line in manifest.vo_lines}
        placed: list[tuple[str, int, str, int]] = []  # shot id, start sample, wav hash, length
        if self.voice_engine != "none":
            for shot in shotlist.shots:
                for line in shot.lines:
                    start = (starts[shot.shot_id] + line.start_frame) * spf
                    window = (shot.frames - line.start_frame) * spf
                    wav_hash, length = self._voice(lines[line.line_id], window)
                    placed.append((shot.shot_id, start, wav_hash, length))
        mood = plan.audio.music_mood
        material = {
            "v": STAGE_VERSIONS["audio"],
            "voice": [[start, wav] for _, start, wav, _ in placed],
            "music": mood,
            "seed": int(digest(self.project.id)[:8], 16),
            "total": total,
            "audio": plan.audio.model_dump(mode="json"),
            "ffmpeg": plan.ffmpeg_build,
        }

        def make(target: Path) -> None:
            voices = [(start, audio.read_wav(self.ws.path(wav))) for _, start, wav, _ in placed]
            music = audio.music_bed(total, mood, material["seed"]) if mood else None  # type: ignore[arg-type]
            pcm = audio.mix(voices, music, total, duck_db=plan.audio.duck_db)
            pcm, _report = audio.normalise_loudness(pcm, plan.audio.target_lufs, plan.audio.true_peak_db)
            audio.encode_aac(pcm, target, cache=_ChunkCache(self.ws))

        parents = [wav for _, _, wav, _ in placed]
        audio_hash, _ = self.ws.derive_file("audio", material, make, kind="AudioMix", parents=parents, suffix=".m4a")
        spans = tuple(VoiceSpan(shot_id, start, start + length) for shot_id, start, _, length in placed)
        return audio_hash, spans

    def _voice(self, line: VoiceLine, window: int) -> tuple[str, int]:
        """Synthesise one line so that it fits its shot: faster speech if needed, never a cut."""
        material = {"v": STAGE_VERSIONS["voice"], "text": line.text, "voice": line.voice,
                    "engine": self.voice_engine, "window": window}

        def make(target: Path) -> None:
            speed = audio.DEFAULT_WPM
            audio.synthesize_voice(line.text, line.voice, target, speed_wpm=speed)
            length = len(audio.read_wav(target))
            if length > window:
                speed = min(audio.MAX_WPM, math.ceil(speed * length / window * 1.05))
                audio.synthesize_voice(line.text, line.voice, target, speed_wpm=speed)
                if len(audio.read_wav(target)) > window:
                    raise PipelineError(
                        f"voice line {line.line_id} does not fit its shot even at {speed} words per minute"
                    )

        wav_hash, _ = self.ws.derive_file("voice", material, make, kind="VoiceLine", parents=[], suffix=".wav")
        return wav_hash, len(audio.read_wav(self.ws.path(wav_hash)))

    # -- assembly, gates, output ---------------------------------------------------------------

    def _assemble_and_check(
        self, shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan, clips: list[str], audio_hash: str,
        srt: bytes, voice: tuple[VoiceSpan, ...],
    ) -> tuple[str, tuple[GateResult, ...]]:
        """Assemble, measure and gate; the episode is stored only once every gate passed."""
        ws = self.ws
        key = ws.key("episode", {"v": STAGE_VERSIONS["episode"], "clips": clips, "audio": audio_hash,
                                 "ffmpeg": plan.ffmpeg_build})
        found = ws.lookup("episode", key)
        scratch = ws.store.scratch()
        try:
            if found is None:
                candidate = scratch / "episode.mp4"
                assemble_episode([ws.path(c) for c in clips], ws.path(audio_hash), candidate)
            else:
                candidate = ws.path(found)
            gates = run_gates(self._measure(candidate, shotlist, manifest, plan, srt, voice))
            failed = [gate for gate in gates if not gate.passed]
            if failed:
                raise GateBlocked(failed[0].gate, failed[0].rule, failed[0].facts)
            if found is None:
                found = ws.put_file(candidate, "Episode", parents=[*clips, audio_hash], params={"key": key},
                                    owned=True)
                ws.remember("episode", key, found)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return found, gates

    def _measure(self, episode: Path, shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan, srt: bytes,
                 voice: tuple[VoiceSpan, ...]) -> EpisodeFacts:
        pcm = probe.decode_audio(episode)
        peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
        loudness = audio.integrated_loudness(pcm) if peak > 0 else None
        images = {digest_of_uri(s.asset_uri) for s in plan.shots if s.asset_uri}
        return EpisodeFacts(
            target=self.project.target_duration,
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
            stored_images=frozenset(h for h in images if self.ws.has(h)),
        )

    def _output(self, profile: Profile, plan: RenderPlan, shotlist: ShotList, manifest: AssetManifest,
                lineage: dict[str, str], episode: str, captions: str, audio_hash: str,
                gates: tuple[GateResult, ...]) -> RenderOutput:
        def output_file(found: str) -> OutputFile:
            return OutputFile(uri=uri_for(found), sha256=found, bytes=self.ws.path(found).stat().st_size)

        return RenderOutput.create(
            project_id=self.project.id,
            tenant_id=self.project.tenant_id,
            site_id=self.ws.site_id,
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

    def _summary(self, status: str, output_hash: str | None = None,
                 errors: tuple[RunError, ...] = ()) -> RunSummary:
        hits = sum(self.ws.hits.values())
        misses = sum(self.ws.misses.values())
        return RunSummary.create(
            project_id=self.project.id,
            tenant_id=self.project.tenant_id,
            site_id=self.ws.site_id,
            status=status,
            stages=tuple(self.timings),
            cache_hits=hits,
            cache_misses=misses,
            cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else 0.0,
            shots_rendered=self.shots_rendered,
            shots_reused=self.shots_reused,
            local_jobs=hits + misses,
            voice_mode="none" if self.voice_engine == "none" else "espeak-ng",
            workers=self.request.workers,
            total_seconds=round(time.perf_counter() - self.started, 3),
            errors=errors,
            output_hash=output_hash,
        )

    def _blocked(self, blocked: GateBlocked) -> RenderResult:
        error = RunError(code=f"gate.{blocked.gate}", message=str(blocked), stage=blocked.gate, recoverable=False)
        summary = self._summary("blocked", errors=(error,))
        self._publish({}, summary)
        return RenderResult(summary=summary, output=None, blocked=blocked)

    def _failed(self, error: PipelineError) -> None:
        """Record why the run failed and withdraw an earlier run's outputs, as a blocked run does."""
        kind = "input" if isinstance(error, InputError) else "media" if isinstance(error, MediaError) else "pipeline"
        stage = self.current_stage or "setup"
        failure = RunError(code=f"{kind}.{stage}", message=str(error), stage=stage,
                           recoverable=isinstance(error, MediaError))
        with contextlib.suppress(OSError):  # the run's own error is the one to report
            self._publish({}, self._summary("failed", errors=(failure,)))

    def _publish(self, files: dict[str, Path], summary: RunSummary) -> None:
        """Replace the output folder's published files; stale ones from an earlier run go."""
        out = self.request.out
        out.mkdir(parents=True, exist_ok=True)
        for name in PUBLISHED:
            if name not in files and name != "run_summary.json":
                (out / name).unlink(missing_ok=True)
        for name, source in files.items():
            atomic_copy(source, out / name)
        atomic_write(out / "run_summary.json", summary.model_dump_json(indent=2).encode("utf-8") + b"\n")

