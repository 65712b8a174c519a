"""Operator controls, applied by the scheduler inside one transaction each.

A control on something that does not exist, or that is in the wrong state, raises
:class:`ControlRefused` before anything is written, so the transaction changes nothing.
Workers learn of a pause, drain or cancellation through Redis keys set here.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from site_scheduler.errors import ControlRefused
from site_scheduler.keys import QUEUES
from site_scheduler.tables import HostRow, QueueRow, RunRow, StageRow, WorkerRow

if TYPE_CHECKING:
    from site_scheduler.scheduler import Scheduler

HOST_STATES = ("healthy", "degraded", "offline")
#: How long a drained worker's in-flight jobs may run before they are requeued elsewhere.
DRAIN_DEADLINE_S = 3600.0
#: A restart drains first, with this shorter deadline.
RESTART_DEADLINE_S = 30.0


def _deadline(args: dict[str, Any], default: float) -> float:
    value = args.get("deadline", default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 7 * 24 * 3600:
        raise ControlRefused(f"deadline {value!r}: expected seconds between 0 and 604800")
    return float(value)


def _queue(session: Session, name: str) -> QueueRow:
    row = session.get(QueueRow, name)
    if row is None:
        raise ControlRefused(f"queue {name!r} does not exist; queues: {', '.join(QUEUES)}")
    return row


def _run(session: Session, run_id: str) -> RunRow:
    row = session.get(RunRow, run_id)
    if row is None:
        raise ControlRefused(f"run {run_id!r} does not exist")
    return row


def _worker(session: Session, name: str) -> WorkerRow:
    row = session.get(WorkerRow, name)
    if row is None:
        known = ", ".join(w.name for w in session.scalars(select(WorkerRow))) or "none"
        raise ControlRefused(f"worker {name!r} does not exist; workers: {known}")
    return row


def apply_control(scheduler: Scheduler, session: Session, action: str, args: dict[str, Any]) -> str:
    keys, emit, r = scheduler.keys, scheduler._emit, scheduler.redis
    if action in ("pause-queue", "resume-queue"):
        queue = _queue(session, args["queue"])
        want = action == "pause-queue"
        if queue.paused == want:
            raise ControlRefused(f"queue {queue.name!r} is already {'paused' if want else 'running'}")
        queue.paused = want
        emit(session, "queue", queue)
        if want:
            r.set(keys.paused(queue.name), "1")
        else:
            r.delete(keys.paused(queue.name))
        return f"queue {queue.name} {'paused' if want else 'resumed'}"
    if action == "cancel-run":
        run = _run(session, args["run"])
        if run.status in ("completed", "failed", "blocked", "cancelled"):
            raise ControlRefused(f"run {run.run_id} is already {run.status}")
        r.set(keys.cancelled(run.run_id), "1", ex=7 * 24 * 3600)
        run.status, run.detail, run.finished_at = "cancelled", "cancelled by an operator", time.time()
        emit(session, "run", run)
        for stage in session.scalars(select(StageRow).where(StageRow.run_id == run.run_id,
                                                            StageRow.status.in_(("waiting", "queued", "running")))):
            stage.status = "cancelled" if stage.status == "running" else "skipped"
            emit(session, "stage", stage)
        return f"run {run.run_id} cancelled"
    if action == "retry-stage":
        run = _run(session, args["run"])
        stage = session.get(StageRow, (run.run_id, args["stage"]))
        if stage is None:
            raise ControlRefused(f"run {run.run_id} has no stage {args['stage']!r}")
        if stage.status != "failed":
            raise ControlRefused(f"stage {stage.stage_id} of run {run.run_id} is {stage.status}, not failed")
        stage.status, stage.error = "waiting", ""
        emit(session, "stage", stage)
        for skipped in session.scalars(select(StageRow).where(StageRow.run_id == run.run_id,
                                                              StageRow.status == "skipped")):
            skipped.status = "waiting"
            emit(session, "stage", skipped)
        run.status, run.detail, run.finished_at = "running", f"retrying {stage.stage_id}", None
        emit(session, "run", run)
        return f"stage {stage.stage_id} of run {run.run_id} re-enqueued with identity {stage.identity[:12]}"
    if action in ("drain-worker", "undrain-worker"):
        deadline = _deadline(args, DRAIN_DEADLINE_S)
        worker = _worker(session, args["worker"])
        if action == "drain-worker":
            if worker.status in ("draining", "drained"):
                raise ControlRefused(f"worker {worker.name} is already {worker.status}")
            r.set(keys.drain(worker.name), json.dumps({"until": time.time() + deadline}))
            worker.status = "draining"
        else:
            if worker.status not in ("draining", "drained"):
                raise ControlRefused(f"worker {worker.name} is {worker.status}, not draining or drained")
            if r.exists(keys.restart(worker.name)):
                raise ControlRefused(f"worker {worker.name} is restarting; it takes work again once it is back")
            r.delete(keys.drain(worker.name))
            worker.status = "idle"
        emit(session, "worker", worker)
        return f"worker {worker.name} {worker.status}"
    if action == "restart-worker":
        deadline = _deadline(args, RESTART_DEADLINE_S)
        worker = _worker(session, args["worker"])
        if worker.status == "offline":
            raise ControlRefused(f"worker {worker.name} is offline: no process to restart; start one")
        if r.exists(keys.restart(worker.name)):
            raise ControlRefused(f"worker {worker.name} is already restarting")
        # A drained worker comes back drained; any other comes back taking work.
        undrain = worker.status not in ("draining", "drained")
        if undrain:
            r.set(keys.drain(worker.name), json.dumps({"until": time.time() + deadline}))
        r.set(keys.restart(worker.name), json.dumps({"undrain": undrain}))
        worker.status = "draining"
        emit(session, "worker", worker)
        return (f"worker {worker.name} restarting: draining (in-flight work requeued after {deadline:g} s), "
                f"then a fresh process{'' if undrain else ' that stays drained'}")
    if action == "mark-host":
        if args["state"] not in HOST_STATES:
            raise ControlRefused(f"host state {args['state']!r}: expected one of {', '.join(HOST_STATES)}")
        host = session.get(HostRow, args["host"])
        if host is None:
            if not session.scalars(select(WorkerRow).where(WorkerRow.host == args["host"])).first():
                raise ControlRefused(f"host {args['host']!r} runs no worker of this site")
            host = HostRow(host=args["host"], site_id=scheduler.site_id, state=args["state"])
            session.add(host)
        host.state = args["state"]
        emit(session, "host", host)
        r.set(keys.host_state(host.host), host.state)
        return f"host {host.host} marked {host.state}"
    raise ControlRefused(f"unknown control {action!r}")
