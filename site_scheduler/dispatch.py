"""Dispatch: sending a run's ready stages to their queues, a short window of work at a time.

Each dispatch is one transaction; its messages are sent after the commit, so a crash in
between loses nothing (the stages stay queued and :meth:`Scheduler.recover` sends them again
as new attempts) and no attempt runs twice. A media stage whose artifact the registry already
holds is finished from the cache without being sent.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.canonical import digest
from pipeline.kinds import KINDS, arguments
from site_scheduler.context import SiteContext
from site_scheduler.graph import RunGraph
from site_scheduler.messages import StagePayload
from site_scheduler.status import LIVE_RUN, RunStatus, StageStatus
from site_scheduler.tables import QueueRow, RunRow, StageRow

#: Messages a queue may hold that no worker has started, counted in estimated seconds of work.
#: Keeping the queue short lets a stage that becomes ready late (the audio mix, once its voices
#: are done) start next instead of behind every shot, and keeps a pause or a cancellation from
#: finding a long backlog; cheap stages may queue deeper, so a burst of them is not throttled
#: by the round trip of each.
QUEUED_WORK_S = 2.0
#: However cheap or dear the stages, a queue may hold this many (so two workers never starve)...
SEND_WINDOW_MIN = 4
#: ... and never more than this many.
SEND_WINDOW_MAX = 512
#: What a stage of a kind never seen finishing is assumed to cost.
DEFAULT_STAGE_COST_S = 1.0


class Dispatcher:
    def __init__(self, site: SiteContext, graph: RunGraph, actors: dict[str, dramatiq.Actor],
                 enqueue_all: Any) -> None:
        self.site = site
        self.graph = graph
        self.actors = actors
        self.enqueue_all = enqueue_all
        self._cost: dict[str, float] = {}  # kind -> moving average of a stage's run time
        self._sent_attempts: list[tuple[str, str, int]] = []  # repeated attempts sent in this dispatch
        self._outgoing: list[dramatiq.Message] = []  # messages of this dispatch, enqueued together
        self._making: set[str | None] = set()  # identities of the stages in flight, during a dispatch

    def dispatch(self) -> bool:
        """Send what is ready and has room on its queue; returns True when a stage was sent or finished."""
        sent = False
        self._outgoing.clear()  # a dispatch that failed before its commit sent nothing that counts
        self._sent_attempts.clear()
        with Session(self.site.engine) as session, session.begin():
            paused = {q.name for q in session.scalars(select(QueueRow).where(QueueRow.paused))}
            runs = {r.run_id: r for r in session.scalars(select(RunRow).where(RunRow.status.in_(LIVE_RUN)))}
            if not runs:
                return False
            waiting = session.scalars(
                select(StageRow).where(StageRow.status == StageStatus.WAITING, StageRow.run_id.in_(runs))
            ).all()
            queued: dict[str, list[float]] = {}
            for queue, kind, count in session.execute(
                select(StageRow.queue, StageRow.kind, func.count()).where(StageRow.status == StageStatus.QUEUED)
                .group_by(StageRow.queue, StageRow.kind)
            ):
                queued.setdefault(queue, []).extend([self.cost_of(kind)] * count)
            # Artifacts being made: a stage of another run making the same one waits for it (and
            # then finishes from the cache) instead of rendering it a second time.
            self._making = set(session.scalars(select(StageRow.identity).where(
                StageRow.status.in_((StageStatus.QUEUED, StageStatus.RUNNING)), StageRow.run_id.in_(runs))))
            outputs: dict[str, dict[str, dict[str, Any]]] = {}
            for stage in sorted(waiting, key=lambda s: KINDS[s.kind].order):
                run = runs[stage.run_id]
                if run.run_id not in outputs:
                    outputs[run.run_id] = self.graph.outputs(session, run.run_id)
                done = outputs[run.run_id]
                if any(need not in done for need in stage.depends_on) or stage.queue in paused:
                    continue
                ahead = queued.setdefault(stage.queue, [])
                if not _room(ahead, self.cost_of(stage.kind)):
                    continue
                if not self._send(session, run, stage, done):
                    continue
                if stage.status == StageStatus.DONE:  # finished from the cache: its dependants may go now
                    done[stage.stage_id] = stage.outputs
                else:
                    ahead.append(self.cost_of(stage.kind))
                sent = True
            self.graph.complete_runs(session)
        # After the commit. A worker handed an older attempt of these stages skips it.
        if self._sent_attempts:
            pipe = self.site.redis.pipeline(transaction=False)
            for run_id, stage_id, attempt in self._sent_attempts:
                pipe.hset(self.site.keys.attempts(run_id), stage_id, attempt)
                pipe.expire(self.site.keys.attempts(run_id), 7 * 24 * 3600)
            pipe.execute()
            self._sent_attempts.clear()
        if self._outgoing:
            self.enqueue_all(self._outgoing)
            self._outgoing.clear()
        return sent

    def cost_of(self, kind: str) -> float:
        return self._cost.get(kind, DEFAULT_STAGE_COST_S)

    def observe_cost(self, kind: str, seconds: float) -> None:
        """Learn how long a kind of stage takes, from what workers report (a moving average)."""
        known = self._cost.get(kind)
        self._cost[kind] = seconds if known is None else 0.8 * known + 0.2 * seconds

    def _send(self, session: Session, run: RunRow, stage: StageRow, done: dict[str, dict[str, Any]]) -> bool:
        """Send the stage, or finish it from the cache; False (nothing changed) while another run makes its artifact."""
        kind = KINDS[stage.kind]
        args = arguments(stage.args, kind, done)
        found, cached = None, False
        if kind.job is not None:
            ws = self.site.workspace(run.tenant_id)
            identity = kind.job(ws, args).key(ws)
            found = ws.registry.derived(run.tenant_id, identity)
            cached = found is not None and ws.has(found)
            if not cached and identity in self._making:
                return False
        else:
            identity = digest({"kind": stage.kind, "args": args})
        stage.args, stage.identity = args, identity
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.RUNNING
            self.site.emit(session, "run", run)
        if cached:
            self.graph.finish_stage(session, run, stage, {"file": found, "key": identity}, cached=True)
            return True
        self._making.add(identity)
        stage.status = StageStatus.QUEUED
        stage.attempts += 1
        payload = StagePayload(run_id=run.run_id, stage_id=stage.stage_id, attempt=stage.attempts, kind=stage.kind,
                               tenant_id=run.tenant_id, args=args)
        message = self.actors[stage.queue].message_with_options(kwargs={"payload": payload.model_dump(mode="json")})
        self._outgoing.append(message)
        stage.message_id = message.message_id
        if stage.attempts > 1:
            self._sent_attempts.append((run.run_id, stage.stage_id, stage.attempts))
        self.site.emit(session, "stage", stage)
        return True


def _room(ahead: list[float], cost: float) -> bool:
    """May one more stage of this cost join a queue holding unstarted stages of these costs?"""
    if len(ahead) < SEND_WINDOW_MIN:
        return True
    return len(ahead) < SEND_WINDOW_MAX and sum(ahead) + cost <= QUEUED_WORK_S
