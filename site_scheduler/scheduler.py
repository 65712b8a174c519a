"""The site scheduler: the site database's only writer, advancing each run's stage DAG.

Everything reaches it through Redis lists: submissions from ``cinefleet submit``, results from
workers, operator controls from the ``cinefleet site`` commands. Each change it makes is one
transaction that also appends to the outbox. A stage's identity is the hash of its inputs;
a media stage whose artifact the registry already holds is finished without being sent, and a
result for a stage that is already finished (a redelivery) changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import dramatiq
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.bundle import open_bundle
from pipeline.canonical import digest
from pipeline.errors import PipelineError
from pipeline.kinds import KINDS, PUBLISHED, Planned, arguments, published
from pipeline.registry import ArtifactRow, AssetCacheRow, DerivationRow
from pipeline.store import atomic_copy
from pipeline.workspace import Workspace
from site_scheduler import outbox, summary
from site_scheduler.broker import make_broker
from site_scheduler.config import SiteEndpoints
from site_scheduler.controls import apply_control
from site_scheduler.errors import ControlRefused
from site_scheduler.keys import QUEUES, Keys
from site_scheduler.redis_server import RedisServer
from site_scheduler.tables import QueueRow, RunRow, StageRow, WorkerRow

log = logging.getLogger(__name__)

FINAL_RUN_STATES = ("completed", "failed", "blocked", "cancelled")
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
#: Throughput is counted over this window (and reported per hour).
THROUGHPUT_WINDOW_S = 3600
#: How long an idle scheduler waits for a result before looking at controls and submissions again.
IDLE_WAIT_S = 0.05
#: How often worker heartbeats are mirrored into the workers table.
WORKER_SYNC_SECONDS = 0.5


class Scheduler:
    def __init__(self, endpoints: SiteEndpoints, engine: Engine) -> None:
        self.endpoints = endpoints
        self.site_id = endpoints.site_id
        self.engine = engine
        self.redis = redis.Redis.from_url(endpoints.redis_url)
        self.keys = Keys(endpoints.namespace)
        self.broker, self.actors = make_broker(endpoints.redis_url, endpoints.namespace)
        self._workspaces: dict[str, Workspace] = {}
        self._synced = 0.0
        self._cost: dict[str, float] = {}  # kind -> moving average of a stage's run time
        self._woken_by: bytes | None = None  # a result taken while waiting, not yet applied
        self._completed: dict[str, list[str]] = {}  # queue -> stages finished in this batch, for throughput
        self._sent_attempts: list[tuple[str, str, int]] = []  # repeated attempts sent in this dispatch
        self._outgoing: list[dramatiq.Message] = []  # messages of this dispatch, enqueued together
        self._advanced: set[str] = set()  # runs a stage of which finished in this transaction
        with Session(engine) as session, session.begin():
            for queue in QUEUES:
                if session.get(QueueRow, queue) is None:
                    row = QueueRow(name=queue, site_id=self.site_id, paused=False, completed=0)
                    session.add(row)
                    outbox.append(session, "queue", row, site_id=self.site_id, tenant_id="-")

    def workspace(self, tenant_id: str) -> Workspace:
        """A tenant's view of the site store; the scheduler only reads the registry through it."""
        if tenant_id not in self._workspaces:
            self._workspaces[tenant_id] = Workspace(Path(self.endpoints.store), tenant_id, self.site_id,
                                                    registry_url=self.engine)
        return self._workspaces[tenant_id]

    # -- the loop --------------------------------------------------------------------------

    def run_forever(self, stop: Any, supervise: RedisServer | None = None) -> None:
        """Schedule until ``stop`` is set; restart the site's own Redis if it dies."""
        recovered = False
        while not stop.is_set():
            try:
                if not recovered:
                    self.recover()
                    while self._dispatch():  # stages a previous scheduler left ready
                        pass
                    recovered = True
                if not self.step():
                    self._wait_for_result()
            except redis.exceptions.ConnectionError:
                recovered = False  # what was moved to a processing list before the error goes back
                if supervise is not None and not supervise.alive():
                    log.warning("the site's redis-server died; restarting it on port %s", supervise.port)
                    supervise.restart()
                time.sleep(0.2)

    def step(self) -> bool:
        """Handle whatever is waiting; returns True when something was done."""
        busy = False
        if time.monotonic() - self._synced > WORKER_SYNC_SECONDS:
            busy = self._sync_workers()
        for source, handle in ((self.keys.controls, self._control), (self.keys.submissions, self._submit)):
            for _ in range(50):
                if not self._take(source, handle):
                    break
                busy = True
        busy = self._take_results() or busy
        if not busy:
            return False  # nothing changed since the last dispatch: nothing new can be ready
        while self._dispatch():  # a stage finished from the cache may free others
            pass
        return True

    def _wait_for_result(self) -> None:
        """Sleep until a worker reports, or briefly: a result is what most often makes work."""
        processing = self.keys.processing(self.keys.results)
        self._woken_by = self.redis.blmove(self.keys.results, processing, IDLE_WAIT_S, "LEFT", "RIGHT")

    def _take_results(self, most: int = 500) -> bool:
        """Apply waiting results in one transaction (the same reliable hand-over as :meth:`_take`)."""
        processing = self.keys.processing(self.keys.results)
        taken = [] if self._woken_by is None else [self._woken_by]
        self._woken_by = None
        batch = 8  # grows while the list keeps giving: one round trip for a short list, few for a long one
        while len(taken) < most:
            pipe = self.redis.pipeline(transaction=False)
            for _ in range(min(batch, most - len(taken))):
                pipe.lmove(self.keys.results, processing, "LEFT", "RIGHT")
            got = [raw for raw in pipe.execute() if raw is not None]
            taken += got
            if len(got) < batch:
                break
            batch *= 4
        if not taken:
            return False
        self._completed.clear()
        results = [result for result in map(json.loads, taken) if result]  # {} is the doorbell
        if results:
            self._apply_results(results)
        pipe = self.redis.pipeline(transaction=False)
        for raw in taken:
            pipe.lrem(processing, 1, raw)
        now = time.time()
        for queue, members in self._completed.items():
            pipe.zadd(self.keys.completed(queue), dict.fromkeys(members, now))
            pipe.zremrangebyscore(self.keys.completed(queue), 0, now - THROUGHPUT_WINDOW_S)
        pipe.execute()
        return True

    def _apply_results(self, results: list[dict[str, Any]]) -> None:
        with Session(self.engine) as session, session.begin():
            # One query loads the batch's stages and runs; each result then finds its rows in the
            # session instead of asking the database (and flushing) once per result.
            wanted = {(r["run_id"], r["stage_id"]) for r in results}
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
                        self._result(session, result)
                except Exception:
                    # One result the scheduler cannot apply must not stop the site (it would meet
                    # the same result again after every restart); it is logged and dropped.
                    log.exception("result for %s/%s attempt %s not applied; dropped", result.get("run_id"),
                                  result.get("stage_id"), result.get("attempt"))
            self._complete_runs(session)

    def _take(self, source: str, handle: Any) -> bool:
        """Move one item to a processing list, apply it, then drop it: a crash loses nothing.

        An item applied twice (a crash between the commit and the drop) is harmless: runs are
        keyed by id and results by stage attempt.
        """
        raw = self.redis.lmove(source, self.keys.processing(source), "LEFT", "RIGHT")
        if raw is None:
            return False
        handle(json.loads(raw))
        self.redis.lrem(self.keys.processing(source), 1, raw)
        return True

    def recover(self) -> None:
        """On start-up (or after losing Redis), put back what was taken but not finished.

        Items a previous scheduler moved to a processing list go back to their list. Stages it
        marked queued may have no message (a crash between the commit and the enqueue, or a
        Redis that lost its data): they go back to waiting and are sent again as new attempts;
        any old message left of them is then stale and skipped by the worker that receives it.
        """
        for source in (self.keys.controls, self.keys.submissions, self.keys.results):
            while self.redis.lmove(self.keys.processing(source), source, "RIGHT", "LEFT") is not None:
                pass
        with Session(self.engine) as session, session.begin():
            live = select(RunRow.run_id).where(RunRow.status.in_(("queued", "running")))
            for stage in session.scalars(select(StageRow).where(StageRow.status == "queued",
                                                                StageRow.run_id.in_(live))):
                stage.status = "waiting"
                self._emit(session, "stage", stage)

    # -- submissions -----------------------------------------------------------------------

    def _submit(self, request: dict[str, Any]) -> None:
        with Session(self.engine) as session, session.begin():
            if session.get(RunRow, request["run_id"]) is not None:
                return  # a resubmitted request: the run exists already
            run = RunRow(run_id=request["run_id"], site_id=self.site_id, tenant_id=request["tenant_id"],
                         project_path=request["project"], project_hash=request["project_hash"],
                         out_dir=request["out"], status="queued", detail="", episode=None, submitted_seq=0,
                         submitted_at=time.time(), finished_at=None)
            session.add(run)
            run.submitted_seq = self._emit(session, "run", run)
            self._record_rows(session, run, request.get("rows", {}))
            for planned in request["stages"]:
                self._add_stage(session, run, Planned(planned["stage_id"], planned["kind"], tuple(planned["needs"]),
                                                      planned["args"]))

    def _add_stage(self, session: Session, run: RunRow, planned: Planned) -> StageRow:
        stage = StageRow(run_id=run.run_id, stage_id=planned.stage_id, site_id=self.site_id, tenant_id=run.tenant_id,
                         kind=planned.kind, queue=KINDS[planned.kind].queue, identity="", status="waiting",
                         depends_on=list(planned.needs), args=planned.args, output=None, outputs={}, attempts=0,
                         worker=None, message_id=None, error="", seconds=None, cache_hits=None, cache_misses=None)
        session.add(stage)
        self._emit(session, "stage", stage)
        return stage

    def _emit(self, session: Session, entity: str, row: Any) -> int:
        return outbox.append(session, entity, row, site_id=self.site_id, tenant_id=getattr(row, "tenant_id", "-"))

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self) -> bool:
        sent = False
        self._outgoing.clear()  # a dispatch that failed before its commit sent nothing that counts
        self._sent_attempts.clear()
        with Session(self.engine) as session, session.begin():
            paused = {q.name for q in session.scalars(select(QueueRow).where(QueueRow.paused))}
            runs = {r.run_id: r for r in session.scalars(select(RunRow).where(RunRow.status.in_(("queued",
                                                                                                     "running"))))}
            if not runs:
                return False
            waiting = session.scalars(
                select(StageRow).where(StageRow.status == "waiting", StageRow.run_id.in_(runs))
            ).all()
            queued: dict[str, list[float]] = {}
            for queue, kind, count in session.execute(
                select(StageRow.queue, StageRow.kind, func.count()).where(StageRow.status == "queued")
                .group_by(StageRow.queue, StageRow.kind)
            ):
                queued.setdefault(queue, []).extend([self._cost_of(kind)] * count)
            outputs: dict[str, dict[str, dict[str, Any]]] = {}
            for stage in sorted(waiting, key=lambda s: KINDS[s.kind].order):
                run = runs[stage.run_id]
                if run.run_id not in outputs:
                    outputs[run.run_id] = self._outputs(session, run.run_id)
                done = outputs[run.run_id]
                if any(need not in done for need in stage.depends_on) or stage.queue in paused:
                    continue
                ahead = queued.setdefault(stage.queue, [])
                if not self._room(ahead, self._cost_of(stage.kind)):
                    continue
                self._send(session, run, stage, done)
                if stage.status == "done":  # finished from the cache: its dependants may go now
                    done[stage.stage_id] = stage.outputs
                else:
                    ahead.append(self._cost_of(stage.kind))
                sent = True
            self._complete_runs(session)
        # After the commit. A worker handed an older attempt of these stages skips it; a crash
        # before the messages go leaves their stages queued with no message, and recover() sends
        # them again as new attempts: nothing is lost, and no attempt runs twice.
        if self._sent_attempts:
            pipe = self.redis.pipeline(transaction=False)
            for run_id, stage_id, attempt in self._sent_attempts:
                pipe.hset(self.keys.attempts(run_id), stage_id, attempt)
                pipe.expire(self.keys.attempts(run_id), 7 * 24 * 3600)
            pipe.execute()
            self._sent_attempts.clear()
        if self._outgoing:
            self.broker.enqueue_all(self._outgoing)
            self._outgoing.clear()
        return sent

    @staticmethod
    def _room(ahead: list[float], cost: float) -> bool:
        """May one more stage of this cost join a queue holding unstarted stages of these costs?"""
        if len(ahead) < SEND_WINDOW_MIN:
            return True
        return len(ahead) < SEND_WINDOW_MAX and sum(ahead) + cost <= QUEUED_WORK_S

    def _cost_of(self, kind: str) -> float:
        return self._cost.get(kind, DEFAULT_STAGE_COST_S)

    def _observe_cost(self, kind: str, seconds: float) -> None:
        """Learn how long a kind of stage takes, from what workers report (a moving average)."""
        known = self._cost.get(kind)
        self._cost[kind] = seconds if known is None else 0.8 * known + 0.2 * seconds

    def _outputs(self, session: Session, run_id: str) -> dict[str, dict[str, Any]]:
        stages = session.scalars(select(StageRow).where(StageRow.run_id == run_id, StageRow.status == "done"))
        return {stage.stage_id: stage.outputs for stage in stages}

    def _send(self, session: Session, run: RunRow, stage: StageRow, done: dict[str, dict[str, Any]]) -> None:
        kind = KINDS[stage.kind]
        args = arguments(stage.args, kind, done)
        stage.args = args
        if run.status == "queued":
            run.status = "running"
            self._emit(session, "run", run)
        if kind.job is not None:
            ws = self.workspace(run.tenant_id)
            stage.identity = kind.job(ws, args).key(ws)
            found = ws.registry.derived(run.tenant_id, stage.identity)
            if found is not None and ws.has(found):
                self._finish_stage(session, run, stage, {"file": found, "key": stage.identity}, cached=True)
                return
        else:
            stage.identity = digest({"kind": stage.kind, "args": args})
        stage.status = "queued"
        stage.attempts += 1
        payload = {"run_id": run.run_id, "stage_id": stage.stage_id, "attempt": stage.attempts,
                   "kind": stage.kind, "tenant_id": run.tenant_id, "args": args}
        message = self.actors[stage.queue].message_with_options(kwargs={"payload": payload})
        self._outgoing.append(message)
        stage.message_id = message.message_id
        if stage.attempts > 1:
            self._sent_attempts.append((run.run_id, stage.stage_id, stage.attempts))
        self._emit(session, "stage", stage)

    # -- results ---------------------------------------------------------------------------

    def _result(self, session: Session, result: dict[str, Any]) -> None:
        stage = session.get(StageRow, (result["run_id"], result["stage_id"]))
        run = session.get(RunRow, result["run_id"])
        if stage is None or run is None:
            log.warning("result for an unknown stage %s/%s", result["run_id"], result["stage_id"])
            return
        status = result["status"]
        if result.get("attempt") != stage.attempts or stage.status not in ("queued", "running") \
                or (status == "started" and stage.status != "queued"):
            # Redelivered, superseded (requeued after a drain deadline or a dead worker, and not
            # sent again yet), or a "started" that arrived after the result it precedes: the
            # stage's identity fixes its artifact, so whichever attempt finishes, the bytes are the same.
            return
        if status != "started" and "seconds" in result:
            self._cost_event(session, run, stage, result)
        if status == "started":
            stage.status, stage.worker = "running", result.get("worker")
            self._emit(session, "stage", stage)
        elif status == "done":
            if "seconds" in result:
                self._observe_cost(stage.kind, float(result["seconds"]))
                stage.seconds = float(result["seconds"])
            stage.cache_hits = sum(result.get("hits", {}).values())
            stage.cache_misses = sum(result.get("misses", {}).values())
            self._record_rows(session, run, result.get("rows", {}))
            stage.worker = result.get("worker")
            self._finish_stage(session, run, stage, result["outputs"])
        elif status == "cancelled":
            stage.status = "cancelled"
            self._emit(session, "stage", stage)
        else:  # failed or blocked
            stage.status, stage.error = "failed", result.get("error", "")
            self._emit(session, "stage", stage)
            if run.status not in FINAL_RUN_STATES:
                self._skip_rest(session, run)
                self._finish_run(session, run, "blocked" if status == "blocked" else "failed",
                                 f"stage {stage.stage_id}: {stage.error}")

    def _record_rows(self, session: Session, run: RunRow, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Insert the registry rows a worker made, once each."""
        for row in rows.get("artifacts", []):
            if session.get(ArtifactRow, (row["tenant_id"], row["hash"])) is None:
                record = ArtifactRow(**{**row, "site_id": self.site_id}, recorded_at=dt.datetime.now(dt.UTC))
                session.add(record)
                self._emit(session, "artifact", record)
        for row in rows.get("derivations", []):
            if session.get(DerivationRow, (row["tenant_id"], row["key"])) is None:
                session.add(DerivationRow(**row))
        for row in rows.get("asset_cache", []):
            session.merge(AssetCacheRow(**row))

    def _finish_stage(self, session: Session, run: RunRow, stage: StageRow, outputs: dict[str, Any],
                      cached: bool = False) -> None:
        kind = KINDS[stage.kind]
        stage.status, stage.outputs = "done", outputs
        stage.output = outputs.get(kind.output) if kind.output else None
        if cached:
            stage.worker = "cache"
        self._emit(session, "stage", stage)
        queue = session.get(QueueRow, stage.queue)
        if queue is not None and not cached:
            queue.completed += 1
            self._completed.setdefault(stage.queue, []).append(f"{run.run_id}/{stage.stage_id}/{stage.attempts}")
        if kind.expand is not None:
            done = self._outputs(session, run.run_id) | {stage.stage_id: outputs}
            for planned in kind.expand(self.workspace(run.tenant_id), stage.args, done):
                self._add_stage(session, run, planned)
        self._advanced.add(run.run_id)

    def _complete_runs(self, session: Session) -> None:
        """A run whose every stage is done is complete: it publishes what its stages made."""
        for run_id in self._advanced:
            left = session.scalars(select(StageRow.stage_id).where(StageRow.run_id == run_id,
                                                                   StageRow.status != "done").limit(1)).first()
            run = session.get(RunRow, run_id)
            if left is None and run is not None and run.status not in FINAL_RUN_STATES:
                self._publish(session, run)
        self._advanced.clear()

    def _cost_event(self, session: Session, run: RunRow, stage: StageRow, result: dict[str, Any]) -> None:
        """What an attempt cost, into the outbox: local compute time now; provider spend when providers exist."""
        data = {"run_id": run.run_id, "stage_id": stage.stage_id, "attempt": result["attempt"], "kind": stage.kind,
                "worker": result.get("worker"), "origin": "local", "provider": "local",
                "compute_seconds": float(result["seconds"]), "usd": 0.0, "outcome": result["status"]}
        outbox.append_event(session, "cost", [run.run_id, stage.stage_id, str(result["attempt"])], data,
                            site_id=self.site_id, tenant_id=run.tenant_id, op="insert")

    def _finish_run(self, session: Session, run: RunRow, status: str, detail: str = "") -> None:
        run.status, run.detail, run.finished_at = status, detail, time.time()
        self._emit(session, "run", run)
        ws = self.workspace(run.tenant_id)
        try:
            summary.write(Path(run.out_dir), summary.build(session, run, ws, self._project_id(run, ws)))
        except (OSError, PipelineError) as exc:  # the run's state stands; the summary is a report of it
            log.error("run %s: run_summary.json not written to %s: %s", run.run_id, run.out_dir, exc)

    @staticmethod
    def _project_id(run: RunRow, ws: Workspace) -> str:
        """The project a run renders, from its bundle; a run of no-op stages has none."""
        if not run.project_hash:
            return ""
        try:
            return open_bundle(ws, run.project_hash).project.id
        except PipelineError:
            return ""

    def _publish(self, session: Session, run: RunRow) -> None:
        stages = session.scalars(select(StageRow).where(StageRow.run_id == run.run_id)).all()
        files = published({s.stage_id: s.outputs for s in stages}, {s.stage_id: s.kind for s in stages})
        out = Path(run.out_dir)
        ws = self.workspace(run.tenant_id)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name in PUBLISHED:
                if name not in files:
                    (out / name).unlink(missing_ok=True)
            for name, found in files.items():
                atomic_copy(ws.path(found), out / name)
        except OSError as exc:
            self._finish_run(session, run, "failed", f"publishing to {out}: {exc}")
            return
        run.episode = str(out / "episode.mp4") if "episode.mp4" in files else None
        self._finish_run(session, run, "completed")

    def _skip_rest(self, session: Session, run: RunRow) -> None:
        for stage in session.scalars(select(StageRow).where(StageRow.run_id == run.run_id,
                                                            StageRow.status.in_(("waiting", "queued")))):
            stage.status = "skipped"
            self._emit(session, "stage", stage)

    # -- workers ---------------------------------------------------------------------------

    def _sync_workers(self) -> bool:
        """Mirror worker heartbeats into the workers table; a worker whose heartbeat expired is offline.

        Returns True when stages of a worker that went offline were put back to run again.
        """
        self._synced = time.monotonic()
        names = sorted(n.decode() for n in self.redis.smembers(self.keys.workers))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:  # every heartbeat and drain key in one round trip, twice a second
            pipe.hgetall(self.keys.worker(name))
            pipe.get(self.keys.drain(name))
        replies = pipe.execute()
        requeued = False
        with Session(self.engine) as session, session.begin():
            for name, raw_beat, drain in zip(names, replies[::2], replies[1::2], strict=True):
                beat = {k.decode(): v.decode() for k, v in raw_beat.items()}
                row = session.get(WorkerRow, name)
                if not beat:
                    if row is not None and row.status != "offline":
                        row.status, row.current_job, row.since = "offline", None, time.time()
                        self._emit(session, "worker", row)
                        requeued |= self._requeue_from(session, name, "it went offline")
                    continue
                status = _intended_status(beat["status"], draining=drain is not None)
                fields = {"host": beat["host"], "pid": int(beat["pid"]), "status": status,
                          "queues": json.loads(beat["queues"]), "current_job": beat["current_job"] or None,
                          "since": float(beat["since"]), "started_at": float(beat.get("started_at") or 0) or None}
                if drain is not None and time.time() > drain_until(drain):
                    requeued |= self._requeue_from(session, name, "its drain deadline passed")
                if row is None:
                    row = WorkerRow(name=name, site_id=self.site_id, **fields)
                    session.add(row)
                elif all(getattr(row, k) == v for k, v in fields.items()):
                    continue
                else:
                    for key, value in fields.items():
                        setattr(row, key, value)
                self._emit(session, "worker", row)
        return requeued

    def _requeue_from(self, session: Session, worker: str, why: str) -> bool:
        """Stages a worker was running go back to waiting; they are sent again as a new attempt.

        The worker is told to abandon the old attempt (its subprocesses are killed), and if
        dramatiq redelivers the old message, that attempt's result is ignored: the stage's
        identity fixes its artifact, so whichever attempt finishes, the bytes are the same.
        """
        stages = session.scalars(select(StageRow).where(StageRow.worker == worker, StageRow.status == "running"))
        requeued = False
        for stage in stages:
            run = session.get(RunRow, stage.run_id)
            if run is None or run.status in FINAL_RUN_STATES:
                continue
            self.redis.sadd(self.keys.abandon(worker), f"{stage.run_id}/{stage.stage_id}/{stage.attempts}")
            self.redis.expire(self.keys.abandon(worker), 24 * 3600)
            stage.status = "waiting"
            stage.error = f"requeued from worker {worker}: {why} during attempt {stage.attempts}"
            self._emit(session, "stage", stage)
            requeued = True
        return requeued

    # -- controls --------------------------------------------------------------------------

    def _control(self, request: dict[str, Any]) -> None:
        with Session(self.engine) as session:
            try:
                if time.time() > request.get("expires", math.inf):
                    # Its sender stopped waiting and reported it unanswered: applying it now would
                    # be a change nobody asked for any more.
                    raise ControlRefused(f"{request['action']} expired before the site took it; nothing changed")
                with session.begin():
                    message = apply_control(self, session, request["action"], request.get("args", {}))
                reply = {"ok": True, "message": message}
            except ControlRefused as exc:
                reply = {"ok": False, "message": str(exc)}
            except Exception as exc:
                # A bug must not take the scheduler down; the operator sees it, the log keeps it.
                log.exception("control %s failed", request.get("action"))
                reply = {"ok": False, "message": f"internal error: {exc!r}"}
        self.redis.rpush(self.keys.reply(request["id"]), json.dumps(reply))
        self.redis.expire(self.keys.reply(request["id"]), 60)


def _intended_status(reported: str, *, draining: bool) -> str:
    """A worker's status as the operator's last drain control makes it.

    A heartbeat can predate the control (it is published every half second), so a stale
    "drained" must not undo an undrain the scheduler already applied, nor a stale "idle" a drain.
    """
    if draining:
        return {"idle": "draining", "active": "draining"}.get(reported, reported)
    return {"drained": "idle", "draining": "active"}.get(reported, reported)


def drain_until(raw: bytes) -> float:
    """When a drain's deadline passes; a key written before deadlines existed (a bare number) has none."""
    try:
        value = json.loads(raw)
    except ValueError:
        return math.inf
    return float(value["until"]) if isinstance(value, dict) and "until" in value else math.inf
