"""A run's stage graph in the site database: adding stages, finishing them, completing the run.

The graph itself is the stage-kind table's (:mod:`pipeline.kinds`); here it becomes rows. A run
whose every stage is done is complete and publishes what its stages made; there is no other
rule, so a run of no-op probes completes exactly as an episode does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.bundle import open_bundle
from pipeline.errors import PipelineError
from pipeline.kinds import KINDS, PUBLISHED, Planned, published
from pipeline.store import DamagedArtifact
from pipeline.workspace import Workspace
from site_scheduler import summary
from site_scheduler.context import SiteContext
from site_scheduler.status import RunStatus, StageStatus
from site_scheduler.tables import QueueRow, RunRow, StageRow

log = logging.getLogger(__name__)


class RunGraph:
    def __init__(self, site: SiteContext) -> None:
        self.site = site
        self.advanced: set[str] = set()  # runs a stage of which finished in this transaction
        self.completed: dict[str, list[str]] = {}  # queue -> attempts finished by workers, for throughput

    def add_stage(self, session: Session, run: RunRow, planned: Planned) -> StageRow:
        stage = StageRow(run_id=run.run_id, stage_id=planned.stage_id, site_id=self.site.site_id,
                         tenant_id=run.tenant_id, kind=planned.kind, queue=KINDS[planned.kind].queue, identity="",
                         status=StageStatus.WAITING, depends_on=list(planned.needs), args=planned.args, output=None,
                         outputs={}, attempts=0, worker=None, message_id=None, error="", seconds=None,
                         cache_hits=None, cache_misses=None)
        session.add(stage)
        self.site.emit(session, "stage", stage)
        return stage

    @staticmethod
    def outputs(session: Session, run_id: str) -> dict[str, dict[str, Any]]:
        """The outputs of a run's finished stages, by stage id."""
        stages = session.scalars(select(StageRow).where(StageRow.run_id == run_id,
                                                        StageRow.status == StageStatus.DONE))
        return {stage.stage_id: stage.outputs for stage in stages}

    def finish_stage(self, session: Session, run: RunRow, stage: StageRow, outputs: dict[str, Any],
                     cached: bool = False) -> None:
        """Record a stage done; the stages its kind adds join the run now."""
        kind = KINDS[stage.kind]
        stage.status, stage.outputs = StageStatus.DONE, outputs
        stage.output = outputs.get(kind.output) if kind.output else None
        if cached:
            stage.worker = summary.CACHE
        self.site.emit(session, "stage", stage)
        queue = session.get(QueueRow, stage.queue)
        if queue is not None and not cached:
            queue.completed += 1
            self.completed.setdefault(stage.queue, []).append(f"{run.run_id}/{stage.stage_id}/{stage.attempts}")
        if kind.expand is not None:
            done = self.outputs(session, run.run_id) | {stage.stage_id: outputs}
            for planned in kind.expand(self.site.workspace(run.tenant_id), stage.args, done):
                self.add_stage(session, run, planned)
        self.advanced.add(run.run_id)

    def complete_runs(self, session: Session) -> None:
        """A run whose every stage is done is complete: it publishes what its stages made."""
        for run_id in self.advanced:
            left = session.scalars(select(StageRow.stage_id).where(StageRow.run_id == run_id,
                                                                   StageRow.status != StageStatus.DONE)
                                   .limit(1)).first()
            run = session.get(RunRow, run_id)
            if left is None and run is not None and not RunStatus(run.status).final:
                self._publish(session, run)
        self.advanced.clear()

    def fail(self, session: Session, run: RunRow, status: RunStatus, detail: str) -> None:
        """End a live run that cannot go on: what was not sent is skipped."""
        for stage in session.scalars(select(StageRow).where(
                StageRow.run_id == run.run_id, StageRow.status.in_((StageStatus.WAITING, StageStatus.QUEUED)))):
            stage.status = StageStatus.SKIPPED
            self.site.emit(session, "stage", stage)
        self.finish_run(session, run, status, detail)

    def _publish(self, session: Session, run: RunRow) -> None:
        stages = session.scalars(select(StageRow).where(StageRow.run_id == run.run_id)).all()
        files = published({s.stage_id: s.outputs for s in stages}, {s.stage_id: s.kind for s in stages})
        out = Path(run.out_dir)
        ws = self.site.workspace(run.tenant_id)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name in PUBLISHED:
                if name not in files:
                    (out / name).unlink(missing_ok=True)
            for name, found in files.items():
                ws.store.copy_out(ws.tenant_id, found, out / name)  # hashed as copied: damage is never published
        except (OSError, DamagedArtifact) as exc:
            self.finish_run(session, run, RunStatus.FAILED, f"publishing to {out}: {exc}")
            return
        run.episode = str(out / "episode.mp4") if "episode.mp4" in files else None
        self.finish_run(session, run, RunStatus.COMPLETED)

    def finish_run(self, session: Session, run: RunRow, status: RunStatus, detail: str = "") -> None:
        run.status, run.detail, run.finished_at = status, detail, time.time()
        self.site.emit(session, "run", run)
        ws = self.site.workspace(run.tenant_id)
        try:
            summary.write(Path(run.out_dir), summary.build(session, run, ws, _project_id(run, ws)))
        except (OSError, PipelineError) as exc:  # the run's state stands; the summary is a report of it
            log.error("run %s: run_summary.json not written to %s: %s", run.run_id, run.out_dir, exc)


def _project_id(run: RunRow, ws: Workspace) -> str:
    """The project a run renders, from its bundle; a run of no-op stages has none."""
    if not run.project_hash:
        return ""
    try:
        return open_bundle(ws, run.project_hash).project.id
    except PipelineError:
        return ""
