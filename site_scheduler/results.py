"""Results: what workers report of each attempt, applied in batches to the stages they name.

Results come through one Redis list, moved to a processing list while a batch is applied and
dropped after its commit, so a crash loses none. A result for an attempt that is no longer
the stage's latest (a redelivery, or work requeued from a drained or dead worker) changes
nothing: the stage's identity fixes its artifact, whichever attempt finishes.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy.exc
from sqlalchemy import select
from sqlalchemy.orm import Session

from site_scheduler import outbox
from site_scheduler.context import SiteContext
from site_scheduler.dispatch import Dispatcher
from site_scheduler.graph import RunGraph
from site_scheduler.keys import DOORBELL
from site_scheduler.messages import ResultStatus, StageResult, read
from site_scheduler.rows import record_rows
from site_scheduler.status import RunStatus, StageStatus
from site_scheduler.tables import QueueRow, RunRow, StageRow

log = logging.getLogger(__name__)

#: Throughput is counted over this window (and reported per hour).
THROUGHPUT_WINDOW_S = 3600
#: How long an idle scheduler waits for a result before looking at controls and submissions again.
IDLE_WAIT_S = 0.05
#: Most results applied in one transaction.
BATCH_MOST = 500
#: Errors that mean the database did not answer, not that a result is wrong: never a reason to drop one.
DATABASE_OUTAGES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)


class Results:
    def __init__(self, site: SiteContext, graph: RunGraph, dispatcher: Dispatcher) -> None:
        self.site = site
        self.graph = graph
        self.dispatcher = dispatcher
        self._woken_by: bytes | None = None  # a result taken while waiting, not yet applied

    def wait(self) -> None:
        """Sleep until a worker reports, or briefly: a result is what most often makes work."""
        keys = self.site.keys
        # redis-py types the timeout int (BLMOVE takes seconds as a double) and the reply bytes | str (ours: bytes).
        self._woken_by = self.site.redis.blmove(  # type: ignore[assignment]
            keys.results, keys.processing(keys.results), IDLE_WAIT_S, "LEFT", "RIGHT")  # type: ignore[arg-type]

    def take(self) -> bool:
        """Apply waiting results in one transaction; returns True when any were taken."""
        keys, client = self.site.keys, self.site.redis
        processing = keys.processing(keys.results)
        taken = [] if self._woken_by is None else [self._woken_by]
        self._woken_by = None
        batch = 8  # grows while the list keeps giving: one round trip for a short list, few for a long one
        while len(taken) < BATCH_MOST:
            pipe = client.pipeline(transaction=False)
            for _ in range(min(batch, BATCH_MOST - len(taken))):
                pipe.lmove(keys.results, processing, "LEFT", "RIGHT")
            got = [raw for raw in pipe.execute() if raw is not None]
            taken += got
            if len(got) < batch:
                break
            batch *= 4
        if not taken:
            return False
        self.graph.completed.clear()
        results = [read(StageResult, raw, keys.results) for raw in taken if raw != DOORBELL.encode()]
        valid = [result for result in results if result is not None]
        if valid:
            self._apply(valid)
        pipe = client.pipeline(transaction=False)
        for raw in taken:
            pipe.lrem(processing, 1, raw)  # type: ignore[arg-type]  # typed str by redis-py; bytes are sent as is
        now = time.time()
        for queue, members in self.graph.completed.items():
            pipe.zadd(keys.completed(queue), dict.fromkeys(members, now))
            pipe.zremrangebyscore(keys.completed(queue), 0, now - THROUGHPUT_WINDOW_S)
        pipe.execute()
        return True

    def _apply(self, results: list[StageResult]) -> None:
        with Session(self.site.engine) as session, session.begin():
            # One query loads the batch's stages and runs; each result then finds its rows in the
            # session instead of asking the database (and flushing) once per result.
            wanted = {(r.run_id, r.stage_id) for r in results}
            run_ids = {run_id for run_id, _ in wanted}
            for run_id in run_ids:
                session.get(RunRow, run_id)
            stage_ids = [stage_id for _, stage_id in wanted]
            for chunk in range(0, len(stage_ids), 400):
                session.scalars(select(StageRow).where(StageRow.run_id.in_(run_ids),
                                                       StageRow.stage_id.in_(stage_ids[chunk:chunk + 400]))).all()
            for result in results:
                try:
                    with session.begin_nested():
                        self._one(session, result)
                except DATABASE_OUTAGES:
                    # The database is briefly unavailable (locked past its busy timeout, restarting):
                    # the whole batch rolls back and stays in Redis, applied once the database answers.
                    raise
                except Exception as error:
                    # A result the scheduler cannot apply must not stop the site (it would meet the
                    # same result again after every restart), nor leave its stage running on an idle
                    # worker: the stage fails with the reason, and retry-stage sends it again.
                    log.exception("result for %s/%s attempt %s not applied; its stage fails", result.run_id,
                                  result.stage_id, result.attempt)
                    with session.begin_nested():
                        self._unapplied(session, result, error)
            for name in self.graph.completed:  # a queue's completion counter changed: one event per batch
                queue = session.get(QueueRow, name)
                if queue is not None:
                    self.site.emit(session, "queue", queue)
            self.graph.complete_runs(session)

    def _unapplied(self, session: Session, result: StageResult, error: Exception) -> None:
        stage = session.get(StageRow, (result.run_id, result.stage_id))
        run = session.get(RunRow, result.run_id)
        if stage is None or run is None or result.attempt != stage.attempts or not StageStatus(stage.status).in_flight:
            return
        stage.status = StageStatus.FAILED
        stage.error = f"the {result.status} result of attempt {result.attempt} could not be applied: {error!r}"[:500]
        self.site.emit(session, "stage", stage)
        if not RunStatus(run.status).final:
            self.graph.fail(session, run, RunStatus.FAILED, f"stage {stage.stage_id}: {stage.error}")

    def _one(self, session: Session, result: StageResult) -> None:
        stage = session.get(StageRow, (result.run_id, result.stage_id))
        run = session.get(RunRow, result.run_id)
        if stage is None or run is None:
            log.warning("result for an unknown stage %s/%s", result.run_id, result.stage_id)
            return
        status = result.status
        if result.attempt != stage.attempts or not StageStatus(stage.status).in_flight \
                or (status == ResultStatus.STARTED and stage.status != StageStatus.QUEUED):
            # Redelivered, superseded (requeued after a drain deadline or a dead worker, and not
            # sent again yet), or a "started" that arrived after the result it precedes.
            return
        if status != ResultStatus.STARTED and result.seconds is not None:
            self._cost_event(session, run, stage, result)
        if status == ResultStatus.STARTED:
            stage.status, stage.worker = StageStatus.RUNNING, result.worker
            self.site.emit(session, "stage", stage)
        elif status == ResultStatus.DONE:
            if result.seconds is not None:
                self.dispatcher.observe_cost(stage.kind, result.seconds)
                stage.seconds = result.seconds
            stage.cache_hits = sum(result.hits.values())
            stage.cache_misses = sum(result.misses.values())
            record_rows(session, result.rows, self.site.site_id, self.site.emit)
            stage.worker = result.worker
            self.graph.finish_stage(session, run, stage, result.outputs)
        elif status == ResultStatus.ABANDONED:
            # The worker lost Redis and gave the attempt up: the stage runs again, a new attempt.
            stage.status = StageStatus.WAITING
            stage.error = f"requeued: worker {result.worker} gave up attempt {result.attempt} ({result.error})"
            self.site.emit(session, "stage", stage)
        elif status == ResultStatus.CANCELLED:
            stage.status = StageStatus.CANCELLED
            self.site.emit(session, "stage", stage)
        else:  # failed or blocked
            stage.status, stage.error = StageStatus.FAILED, result.error
            self.site.emit(session, "stage", stage)
            if not RunStatus(run.status).final:
                self.graph.fail(session, run, RunStatus.BLOCKED if status == ResultStatus.BLOCKED
                                else RunStatus.FAILED, f"stage {stage.stage_id}: {stage.error}")

    def _cost_event(self, session: Session, run: RunRow, stage: StageRow, result: StageResult) -> None:
        """What an attempt cost, into the outbox: local compute time now; provider spend when providers exist."""
        data = {"run_id": run.run_id, "stage_id": stage.stage_id, "attempt": result.attempt, "kind": stage.kind,
                "worker": result.worker, "origin": "local", "provider": "local",
                "compute_seconds": result.seconds, "usd": 0.0, "outcome": str(result.status)}
        outbox.append_event(session, "cost", [run.run_id, stage.stage_id, str(result.attempt)], data,
                            site_id=self.site.site_id, tenant_id=run.tenant_id, op="insert")
