"""The single-process render: project file → every artifact → a published episode.

Stages run in order; the media work (voice lines, shots, the audio mix) runs on a thread pool
of ``workers`` ffmpeg processes. Each stage goes through the workspace, so whatever an earlier
run finished is reused and an interrupted render resumes where it stopped. Nothing is published
to the output folder until every gate has passed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from pipeline import steps
from pipeline.bundle import Bundle, bundle_project, gather
from pipeline.documents import load_project
from pipeline.errors import GateBlocked, InputError, MediaError, PipelineError
from pipeline.kinds import KINDS, PUBLISHED, Done, Outputs, Planned, arguments, first_stages, published, run_job
from pipeline.media.ffmpeg import disk_full
from pipeline.media.processes import kill_descendants
from pipeline.models import AssetManifest, RenderOutput, RunSummary, ShotList
from pipeline.models.render import Profile
from pipeline.models.summary import RunError, StageTiming
from pipeline.progress import Progress, Silent
from pipeline.stages.canon_gate import apply_diffs
from pipeline.stages.render_plan import check_profile
from pipeline.store import atomic_write
from pipeline.workspace import Workspace

__all__ = ["PUBLISHED", "Interrupted", "RenderRequest", "RenderResult", "render", "stop_on_signals"]

#: The signals that stop a render as Ctrl-C does: a service manager's stop, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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


class Interrupted(KeyboardInterrupt):
    """A stop signal reached a render run under :func:`stop_on_signals`; it has stopped cleanly."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"render interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread.

    Python's default for SIGTERM and SIGHUP ends the process at once: no ``finally`` runs, so
    every encode in flight was left running and every scratch folder left behind. Raised as an
    exception instead, the render kills its encoders and its stages remove their scratch
    (:meth:`_Run._media`). Only the first signal is raised; a second one during that clean-up
    is ignored rather than cutting it short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a render elsewhere keeps its caller's
        return
    raised = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not raised.is_set():
            raised.set()
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def render(request: RenderRequest, progress: Progress | None = None) -> RenderResult:
    """Render a project; raises :class:`InputError` before writing anything when input is bad.

    Before it starts it removes the scratch folders that killed renders (or workers) on this
    host left in the store.
    """
    progress = progress or Silent()
    profile = check_profile(request.profile)
    if request.workers < 1:
        raise InputError(f"--workers: value {request.workers}: expected an integer ≥ 1")
    for option, folder in (("--out", request.out), ("--store", request.store)):
        _check_folder(option, Path(folder))
    gathered = gather(load_project(request.project))  # bad input stops here, before anything is written
    workspace = Workspace(request.store, gathered.loaded.project.tenant_id, request.site_id)
    try:
        workspace.store.sweep_scratch()
        bundle = bundle_project(workspace, gathered)
        return _Run(request, bundle, workspace, progress).execute(profile)
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
    def __init__(self, request: RenderRequest, bundle: Bundle, ws: Workspace, progress: Progress) -> None:
        self.request = request
        self.bundle = bundle
        self.project = bundle.project
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

    def execute(self, profile: Profile) -> RenderResult:
        try:
            return self._steps(profile)
        except GateBlocked as blocked:
            return self._blocked(blocked)
        except PipelineError as error:
            self._failed(error)
            raise
        except OSError as error:
            reason = disk_full(error, self.request.store)
            if reason is None:
                raise
            # A full disk is the operator's to fix, not a bug: a clear, recoverable failure naming
            # the volume, with a run summary, instead of a traceback.
            full = MediaError(reason)
            self._failed(full)
            raise full from error

    def _run(self, planned: Planned, done: Done) -> tuple[Outputs, bool]:
        """Run one stage of the table in this process; returns its outputs and whether it was reused."""
        kind = KINDS[planned.kind]
        args = arguments(planned.args, kind, done)
        if kind.job is not None:
            return run_job(self.ws, kind.job(self.ws, args))
        assert kind.run is not None, f"{kind.name} does no work and has no place in a render"
        return kind.run(self.ws, args), False

    def _steps(self, profile: Profile) -> RenderResult:
        ws, bundle = self.ws, self.bundle
        done: dict[str, Outputs] = {}
        first = {planned.stage_id: planned for planned in first_stages(bundle.hash, profile)}
        with self.stage("script") as facts:
            done["script"], _ = self._run(first["script"], done)
            facts["output"] = done["script"]["script"]
            _, outcomes = apply_diffs(bundle.canon, bundle.project.canon_diffs)
            facts["detail"] = ", ".join(f"{o.diff_id}:{o.outcome}" for o in outcomes)
        with self.stage("canon_gate") as facts:
            done["canon_gate"], _ = self._run(first["canon_gate"], done)
            facts["detail"] = "no contradictions"
        with self.stage("shotlist") as facts:
            done["shotlist"], _ = self._run(first["shotlist"], done)
            shotlist = ws.load_document(done["shotlist"]["shotlist"], ShotList)
            facts["output"] = done["shotlist"]["shotlist"]
            facts["detail"] = f"{len(shotlist.shots)} shots, {shotlist.total_frames} frames"
        with self.stage("assets") as facts:
            done["assets"], _ = self._run(first["assets"], done)
            manifest = ws.load_document(done["assets"]["manifest"], AssetManifest)
            facts["output"] = done["assets"]["manifest"]
            placeholders = [a.asset_id for a in manifest.assets if a.resolved.placeholder]
            facts["detail"] = f"{len(manifest.assets)} assets, placeholders: {', '.join(placeholders) or 'none'}"
        with self.stage("render_plan") as facts:
            plan = first["render_plan"]
            done["render_plan"], _ = self._run(plan, done)
            facts["output"] = done["render_plan"]["plan"]
        kind = KINDS["render_plan"]
        assert kind.expand is not None
        added = kind.expand(ws, arguments(plan.args, kind, done), done)
        # The stages nothing else waits on (the finish) are the assembly; the rest is the media.
        last = [p for p in added if not any(p.stage_id in other.needs for other in added)]
        with self.stage("media") as facts:
            self._media([p for p in added if p not in last], done)
            facts["detail"] = f"{self.shots_rendered} shots rendered, {self.shots_reused} reused"
        with self.stage("assemble") as facts:
            for planned in last:
                done[planned.stage_id], _ = self._run(planned, done)
                facts["output"] = done[planned.stage_id].get("episode")
        kinds_of = {planned.stage_id: planned.kind for planned in (*first.values(), *added)}
        files = published(done, kinds_of)
        output = files["RenderOutput.json"]
        summary = self._summary("completed", output_hash=output)
        self._publish(files, summary)
        return RenderResult(summary=summary, output=ws.load_document(output, RenderOutput))

    # -- media -----------------------------------------------------------------------------

    def _media(self, stages: list[Planned], done: dict[str, Outputs]) -> None:
        """Run the media stages on ``workers`` threads, each as soon as the stages it needs are done."""
        waiting = {planned.stage_id: planned for planned in stages}
        shots = sum(1 for planned in stages if planned.kind == "shot")
        running: dict[Future[tuple[Outputs, bool]], Planned] = {}
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.request.workers, thread_name_prefix="render") as pool:
            try:
                while waiting or running:
                    for stage_id, planned in list(waiting.items()):
                        if all(need in done for need in planned.needs):
                            running[pool.submit(self._run, planned, dict(done))] = planned
                            del waiting[stage_id]
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        planned = running.pop(future)
                        done[planned.stage_id], cached = future.result()
                        if planned.kind == "shot":
                            if cached:
                                self.shots_reused += 1
                            else:
                                self.shots_rendered += 1
                            self.progress.shot(self.shots_reused + self.shots_rendered, shots,
                                               planned.args["shot_id"], time.perf_counter() - began, cached)
            except BaseException as error:
                # Without this, leaving the pool waits for every queued stage: a failed shot or a
                # Ctrl-C would only be reported once the whole episode had been rendered.
                pool.shutdown(wait=False, cancel_futures=True)
                if isinstance(error, KeyboardInterrupt):
                    # Stopped (Ctrl-C, SIGTERM): the encodes in flight are killed too, so their
                    # threads end now and remove their scratch; a failed stage lets them finish.
                    while not all(future.done() for future in running):
                        kill_descendants()
                        wait(running, timeout=0.05)
                pool.shutdown(wait=True)
                raise

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

    def _publish(self, files: dict[str, str], summary: RunSummary) -> None:
        """Replace the output folder's published files (name → hash); stale ones from an earlier run go.

        Each is hashed as it is copied out, so a blob damaged in the store is never published.
        """
        out = self.request.out
        out.mkdir(parents=True, exist_ok=True)
        for name in PUBLISHED:
            if name not in files and name != "run_summary.json":
                (out / name).unlink(missing_ok=True)
        for name, found in files.items():
            self.ws.store.copy_out(self.ws.tenant_id, found, out / name)
        atomic_write(out / "run_summary.json", summary.model_dump_json(indent=2).encode("utf-8") + b"\n")

