"""The single-process render: project file → every artifact → a published episode.

Stages run in order; the media work (voice lines, shots, the audio mix) runs on a thread pool
of ``workers`` ffmpeg processes. Each stage goes through the workspace, so whatever an earlier
run finished is reused and an interrupted render resumes where it stopped. Nothing is published
to the output folder until every gate has passed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from pipeline import steps
from pipeline.documents import LoadedProject, load_project
from pipeline.errors import GateBlocked, InputError, MediaError, PipelineError
from pipeline.media import audio
from pipeline.models import AssetManifest, RenderOutput, RenderPlan, RunSummary, ShotList
from pipeline.models.project import ProfileSettings
from pipeline.models.render import Profile
from pipeline.models.summary import RunError, StageTiming
from pipeline.progress import Progress, Silent
from pipeline.stages.assets import Library, open_library
from pipeline.stages.qa import VoiceSpan
from pipeline.stages.render_plan import check_profile
from pipeline.store import atomic_copy, atomic_write
from pipeline.workspace import Workspace

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
        self.current_stage = ""
        self.voice_engine = steps.voice_engine()

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
        try:
            return self._steps(profile, settings, library)
        except GateBlocked as blocked:
            return self._blocked(blocked)
        except PipelineError as error:
            self._failed(error)
            raise

    def _steps(self, profile: Profile, settings: ProfileSettings, library: Library) -> RenderResult:
        ws, project = self.ws, self.project
        with self.stage("script") as facts:
            written = steps.write_script(ws, project, self.loaded.canon)
            facts["output"] = written.script
            facts["detail"] = ", ".join(f"{o.diff_id}:{o.outcome}" for o in written.outcomes)
        with self.stage("canon_gate") as facts:
            steps.check_canon(ws, written.canon, written.script)
            facts["detail"] = "no contradictions"
        with self.stage("shotlist") as facts:
            shotlist_hash = steps.write_shotlist(ws, written.script, written.canon, settings.fps)
            shotlist = ws.load_document(shotlist_hash, ShotList)
            facts["output"] = shotlist_hash
            facts["detail"] = f"{len(shotlist.shots)} shots, {shotlist.total_frames} frames"
        with self.stage("assets") as facts:
            music = project.music.mood if project.music.enabled else None
            manifest_hash = steps.write_manifest(ws, shotlist_hash, written.script, written.canon, library, music)
            manifest = ws.load_document(manifest_hash, AssetManifest)
            facts["output"] = manifest_hash
            placeholders = [a.asset_id for a in manifest.assets if a.resolved.placeholder]
            facts["detail"] = f"{len(manifest.assets)} assets, placeholders: {', '.join(placeholders) or 'none'}"
        with self.stage("render_plan") as facts:
            plan_hash = steps.write_plan(ws, profile, settings, shotlist_hash, manifest_hash, self.voice_engine)
            plan = ws.load_document(plan_hash, RenderPlan)
            facts["output"] = plan_hash
        with self.stage("media") as facts:
            clips, audio_hash, voice_spans = self._media(shotlist, manifest, plan)
            facts["detail"] = f"{self.shots_rendered} shots rendered, {self.shots_reused} reused"
        lineage = {
            "Project": written.project, "Canon": written.canon, "Script": written.script,
            "ShotList": shotlist_hash, "AssetManifest": manifest_hash, "RenderPlan": plan_hash,
        }
        with self.stage("assemble") as facts:
            finished = steps.finish(ws, project, profile, lineage, clips, audio_hash, voice_spans)
            facts["output"] = finished.episode
        summary = self._summary("completed", output_hash=finished.output)
        self._publish(
            {
                "Script.json": ws.path(written.script),
                "ShotList.json": ws.path(shotlist_hash),
                "AssetManifest.json": ws.path(manifest_hash),
                "RenderPlan.json": ws.path(plan_hash),
                "RenderOutput.json": ws.path(finished.output),
                "captions.srt": ws.path(finished.captions),
                "episode.mp4": ws.path(finished.episode),
            },
            summary,
        )
        return RenderResult(summary=summary, output=finished.document)

    # -- media -----------------------------------------------------------------------------

    def _media(
        self, shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan
    ) -> tuple[list[str], str, tuple[VoiceSpan, ...]]:
        ws = self.ws
        by_id = {shot.shot_id: shot for shot in shotlist.shots}
        with ThreadPoolExecutor(max_workers=self.request.workers, thread_name_prefix="render") as pool:
            audio_future = pool.submit(self._audio, shotlist, manifest, plan)
            futures: dict[Future[tuple[str, bool]], str] = {
                pool.submit(steps.shot_job(ws, planned, by_id[planned.shot_id], plan).run, ws): planned.shot_id
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

    def _audio(
        self, shotlist: ShotList, manifest: AssetManifest, plan: RenderPlan
    ) -> tuple[str, tuple[VoiceSpan, ...]]:
        ws = self.ws
        voices, spans = [], []
        for placement in steps.voice_placements(shotlist, manifest, plan):
            wav, _ = steps.voice_job(placement.line, placement.window, plan.audio.voice_engine).run(ws)
            voices.append((placement.start, wav))
            length = len(audio.read_wav(ws.path(wav)))
            spans.append(VoiceSpan(placement.shot_id, placement.start, placement.start + length))
        audio_hash, _ = steps.audio_job(ws, voices, shotlist, plan, self.project.id).run(ws)
        return audio_hash, tuple(spans)

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

