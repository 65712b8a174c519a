"""Liveness: worker heartbeats mirrored into the workers table, and work taken back from the lost.

A worker whose heartbeat expired is offline, and the stages it was running go back to waiting,
as do those of a draining worker whose deadline passed; they are sent again as new attempts.
"""

from __future__ import annotations

import json
import math
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from site_scheduler.context import SiteContext
from site_scheduler.messages import Heartbeat
from site_scheduler.status import RunStatus, StageStatus, WorkerStatus
from site_scheduler.tables import RunRow, StageRow, WorkerRow

#: How often worker heartbeats are mirrored into the workers table.
WORKER_SYNC_SECONDS = 0.5


class Liveness:
    def __init__(self, site: SiteContext) -> None:
        self.site = site
        self._synced = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._synced > WORKER_SYNC_SECONDS

    def sync(self) -> bool:
        """Mirror heartbeats into the workers table; returns True when stages were put back to run again."""
        self._synced = time.monotonic()
        keys, client = self.site.keys, self.site.redis
        # redis-py types replies bytes | str; this client (no decode_responses) gets bytes.
        names = sorted(n.decode() for n in client.smembers(keys.workers))  # type: ignore[union-attr]
        pipe = client.pipeline(transaction=False)
        for name in names:  # every heartbeat and drain key in one round trip, twice a second
            pipe.hgetall(keys.worker(name))
            pipe.get(keys.drain(name))
        replies = pipe.execute()
        requeued = False
        with Session(self.site.engine) as session, session.begin():
            for name, raw_beat, drain in zip(names, replies[::2], replies[1::2], strict=True):
                row = session.get(WorkerRow, name)
                if not raw_beat:
                    if row is not None and row.status != WorkerStatus.OFFLINE:
                        row.status, row.current_job, row.since = WorkerStatus.OFFLINE, None, time.time()
                        self.site.emit(session, "worker", row)
                        requeued |= self._requeue_from(session, name, "it went offline")
                    continue
                beat = Heartbeat.from_hash(raw_beat, keys.worker(name))
                if beat is None:
                    continue
                fields = {"host": beat.host, "pid": beat.pid,
                          "status": intended_status(beat.status, draining=drain is not None),
                          "queues": beat.queues, "current_job": beat.current_job or None, "since": beat.since,
                          "started_at": beat.started_at, "builds": beat.builds or None,
                          "refused": beat.refused or None}
                if drain is not None and time.time() > drain_until(drain):
                    requeued |= self._requeue_from(session, name, "its drain deadline passed")
                if row is None:
                    row = WorkerRow(name=name, site_id=self.site.site_id, **fields)
                    session.add(row)
                elif all(getattr(row, k) == v for k, v in fields.items()):
                    continue
                else:
                    for key, value in fields.items():
                        setattr(row, key, value)
                self.site.emit(session, "worker", row)
        return requeued

    def _requeue_from(self, session: Session, worker: str, why: str) -> bool:
        """Stages a worker was running go back to waiting; they are sent again as a new attempt.

        The worker is told to abandon the old attempt (its subprocesses are killed), and if
        dramatiq redelivers the old message, that attempt's result is ignored: the stage's
        identity fixes its artifact, so whichever attempt finishes, the bytes are the same.
        """
        keys, client = self.site.keys, self.site.redis
        stages = session.scalars(select(StageRow).where(StageRow.worker == worker,
                                                        StageRow.status == StageStatus.RUNNING))
        requeued = False
        for stage in stages:
            run = session.get(RunRow, stage.run_id)
            if run is None or RunStatus(run.status).final:
                continue
            client.sadd(keys.abandon(worker), f"{stage.run_id}/{stage.stage_id}/{stage.attempts}")
            client.expire(keys.abandon(worker), 24 * 3600)
            stage.status = StageStatus.WAITING
            stage.error = f"requeued from worker {worker}: {why} during attempt {stage.attempts}"
            self.site.emit(session, "stage", stage)
            requeued = True
        return requeued


def intended_status(reported: WorkerStatus, *, draining: bool) -> WorkerStatus:
    """A worker's status as the operator's last drain control makes it.

    A heartbeat can predate the control (it is published every half second), so a stale
    "drained" must not undo an undrain the scheduler already applied, nor a stale "idle" a drain.
    """
    if draining:
        return {WorkerStatus.IDLE: WorkerStatus.DRAINING, WorkerStatus.ACTIVE: WorkerStatus.DRAINING}.get(
            reported, reported)
    return {WorkerStatus.DRAINED: WorkerStatus.IDLE, WorkerStatus.DRAINING: WorkerStatus.ACTIVE}.get(
        reported, reported)


def drain_until(raw: bytes) -> float:
    """When a drain's deadline passes; a key written before deadlines existed (a bare number) has none."""
    try:
        value = json.loads(raw)
    except ValueError:
        return math.inf
    return float(value["until"]) if isinstance(value, dict) and "until" in value else math.inf
