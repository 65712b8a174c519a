"""What a finished site run did, as the same ``run_summary.json`` ``cinefleet render`` writes.

Built from the stage rows: a stage the scheduler finished from the registry without sending
it is a cache hit; a stage a worker ran brings the run time and the reuse the worker reported
(the AAC chunks of a mix found through the site's hints, its own output a miss).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.kinds import published
from pipeline.models import RenderPlan, RunSummary
from pipeline.models.summary import RunError, StageTiming
from pipeline.store import atomic_write
from pipeline.workspace import Workspace
from site_scheduler.status import RunStatus, StageStatus
from site_scheduler.tables import RunRow, StageRow

#: The worker name a stage finished from the cache is recorded under.
CACHE = "cache"


def build(session: Session, run: RunRow, ws: Workspace, project_id: str) -> RunSummary:
    stages = list(session.scalars(select(StageRow).where(StageRow.run_id == run.run_id)
                                  .order_by(StageRow.stage_id)))
    ran = [s for s in stages if s.status == StageStatus.DONE and s.worker != CACHE]
    # A stage finished from the registry is one hit; a stage a worker ran counts what it reused
    # and made inside (its own output is one miss), as `cinefleet render` counts its workspace.
    hits = (sum(1 for s in stages if s.status == StageStatus.DONE and s.worker == CACHE)
            + sum(s.cache_hits or 0 for s in ran))
    misses = sum(s.cache_misses or 0 for s in ran)
    shots = [s for s in stages if s.kind == "shot" and s.status == StageStatus.DONE]
    failed = [s for s in stages if s.status == StageStatus.FAILED]
    files = published({s.stage_id: s.outputs for s in stages if s.status == StageStatus.DONE},
                      {s.stage_id: s.kind for s in stages})
    plan = files.get("RenderPlan.json")
    voice = ws.load_document(plan, RenderPlan).audio.voice_engine if plan else "none"
    # A summary tells how a run ended; a cancelled run did not finish, which it reports as failed.
    ended = RunStatus(run.status)
    status = ended if ended in (RunStatus.COMPLETED, RunStatus.BLOCKED, RunStatus.FAILED) else RunStatus.FAILED
    return RunSummary.create(
        run_id=run.run_id,
        project_id=project_id,
        tenant_id=run.tenant_id,
        site_id=run.site_id,
        status=status.value,
        stages=tuple(StageTiming(stage=s.stage_id, seconds=round(s.seconds or 0.0, 3),
                                 cache_hits=1 if s.worker == CACHE else s.cache_hits or 0,
                                 cache_misses=0 if s.worker == CACHE else s.cache_misses or 0,
                                 output_hash=s.output) for s in stages if s.status == StageStatus.DONE),
        cache_hits=hits,
        cache_misses=misses,
        cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else 0.0,
        shots_rendered=sum(1 for s in shots if s.worker != CACHE),
        shots_reused=sum(1 for s in shots if s.worker == CACHE),
        local_jobs=sum(s.attempts for s in stages),
        voice_mode="none" if voice == "none" else "espeak-ng",
        workers=len({s.worker for s in ran}),
        total_seconds=round((run.finished_at or 0.0) - (run.submitted_at or run.finished_at or 0.0), 3),
        errors=tuple(RunError(code=f"{run.status}.{s.kind}", message=s.error, stage=s.stage_id,
                              recoverable=run.status == RunStatus.FAILED) for s in failed),
        output_hash=files.get("RenderOutput.json"),
    )


def write(out_dir: Path, summary: RunSummary) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "run_summary.json", summary.model_dump_json(indent=2).encode("utf-8") + b"\n")
