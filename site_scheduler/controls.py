"""Operator controls, applied by the scheduler inside one transaction each.

The registry :data:`CONTROLS` holds one function per operator action of
:data:`protos.actions.ACTIONS` (by its site control name) and the agent's own ``mark-host``.

A control on something that does not exist, or that is in the wrong state, raises
:class:`ControlRefused` before anything is written, so the transaction changes nothing.
Workers learn of a pause, drain or cancellation through Redis keys set here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from protos.actions import ACTIONS, QUEUES
from site_scheduler.errors import ControlRefused
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


Control = Callable[["Scheduler", Session, dict[str, Any]], str]


def _pause_or_resume(want: bool) -> Control:
    def apply(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
        queue = _queue(session, args["queue"])
        if queue.paused == want:
            raise ControlRefused(f"queue {queue.name!r} is already {'paused' if want else 'running'}")
        queue.paused = want
        scheduler._emit(session, "queue", queue)
        if want:
            scheduler.redis.set(scheduler.keys.paused(queue.name), "1")
        else:
            scheduler.redis.delete(scheduler.keys.paused(queue.name))
        return f"queue {queue.name} {'paused' if want else 'resumed'}"

    return apply


def _cancel_run(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
    emit = scheduler._emit
    run = _run(session, args["run"])
    if run.status in ("completed", "failed", "blocked", "cancelled"):
        raise ControlRefused(f"run {run.run_id} is already {run.status}")
    scheduler.redis.set(scheduler.keys.cancelled(run.run_id), "1", ex=7 * 24 * 3600)
    run.status, run.detail, run.finished_at = "cancelled", "cancelled by an operator", time.time()
    emit(session, "run", run)
    for stage in session.scalars(select(StageRow).where(StageRow.run_id == run.run_id,
                                                        StageRow.status.in_(("waiting", "queued", "running")))):
        stage.status = "cancelled" if stage.status == "running" else "skipped"
        emit(session, "stage", stage)
    return f"run {run.run_id} cancelled"


def _retry_stage(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
    emit = scheduler._emit
    run = _run(session, args["run"])
    stage = session.get(StageRow, (run.run_id, args["stage"]))
    if stage is None:
        raise ControlRefused(f"run {run.run_id} has no stage {args['stage']!r}")
    if stage.status == "running" and not _no_live_attempt(session, stage):
        raise ControlRefused(f"stage {stage.stage_id} of run {run.run_id} is running on worker {stage.worker}, "
                             "which is still running it; only a failed stage or one no worker runs can be retried")
    if stage.status not in ("failed", "running"):
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


def _no_live_attempt(session: Session, stage: StageRow) -> bool:
    """A stage marked running that no worker is running (its result was lost, or its worker is gone).

    Sending it again is safe even if the old attempt still lives: the new attempt makes the old
    one stale, its worker kills it, and its result changes nothing.
    """
    if stage.status != "running":
        return False
    worker = session.get(WorkerRow, stage.worker) if stage.worker else None
    return worker is None or worker.status == "offline" or worker.current_job != f"{stage.run_id}/{stage.stage_id}"


def _drain_worker(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
    deadline = _deadline(args, DRAIN_DEADLINE_S)
    worker = _worker(session, args["worker"])
    if worker.status in ("draining", "drained"):
        raise ControlRefused(f"worker {worker.name} is already {worker.status}")
    worker.drain_until = time.time() + deadline
    scheduler.redis.set(scheduler.keys.drain(worker.name), json.dumps({"until": worker.drain_until}))
    worker.status = "draining"
    scheduler._emit(session, "worker", worker)
    return f"worker {worker.name} {worker.status}"


def _undrain_worker(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
    keys, r = scheduler.keys, scheduler.redis
    worker = _worker(session, args["worker"])
    if worker.status not in ("draining", "drained"):
        raise ControlRefused(f"worker {worker.name} is {worker.status}, not draining or drained")
    if r.exists(keys.restart(worker.name)):
        raise ControlRefused(f"worker {worker.name} is restarting; it takes work again once it is back")
    r.delete(keys.drain(worker.name))
    worker.status, worker.drain_until = "idle", None
    scheduler._emit(session, "worker", worker)
    return f"worker {worker.name} {worker.status}"


def _restart_worker(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
    keys, r = scheduler.keys, scheduler.redis
    deadline = _deadline(args, RESTART_DEADLINE_S)
    worker = _worker(session, args["worker"])
    if worker.status == "offline":
        raise ControlRefused(f"worker {worker.name} is offline: no process to restart; start one")
    if r.exists(keys.restart(worker.name)):
        raise ControlRefused(f"worker {worker.name} is already restarting")
    # A drained worker comes back drained; any other comes back taking work.
    undrain = worker.status not in ("draining", "drained")
    if undrain:
        worker.drain_until = time.time() + deadline
        r.set(keys.drain(worker.name), json.dumps({"until": worker.drain_until}))
    r.set(keys.restart(worker.name), json.dumps({"undrain": undrain}))
    worker.status = "draining"
    scheduler._emit(session, "worker", worker)
    return (f"worker {worker.name} restarting: draining (in-flight work requeued after {deadline:g} s), "
            f"then a fresh process{'' if undrain else ' that stays drained'}")


def _mark_host(scheduler: Scheduler, session: Session, args: dict[str, Any]) -> str:
    if args["state"] not in HOST_STATES:
        raise ControlRefused(f"host state {args['state']!r}: expected one of {', '.join(HOST_STATES)}")
    host = session.get(HostRow, args["host"])
    if host is None:
        if not session.scalars(select(WorkerRow).where(WorkerRow.host == args["host"])).first():
            raise ControlRefused(f"host {args['host']!r} runs no worker of this site")
        host = HostRow(host=args["host"], site_id=scheduler.site_id, state=args["state"])
        session.add(host)
    host.state = args["state"]
    scheduler._emit(session, "host", host)
    scheduler.redis.set(scheduler.keys.host_state(host.host), host.state)
    return f"host {host.host} marked {host.state}"


#: How each operator action of :data:`protos.actions.ACTIONS` is applied, by its site control name.
_OPERATOR_CONTROLS: dict[str, Control] = {
    "drain-worker": _drain_worker,
    "undrain-worker": _undrain_worker,
    "restart-worker": _restart_worker,
    "pause-queue": _pause_or_resume(True),
    "resume-queue": _pause_or_resume(False),
    "cancel-run": _cancel_run,
    "retry-stage": _retry_stage,
}
#: The control the ops agent sends on its own (its host's health state), not an operator action:
#: no proto enum, no signed command, no command of ``cinefleet ops``.
MARK_HOST = "mark-host"

#: The controls the site applies, by name: every operator action of the table, then ``mark-host``.
#: A row without an implementation here fails at import, so the table and the site cannot drift.
CONTROLS: Mapping[str, Control] = MappingProxyType(
    {row.control: _OPERATOR_CONTROLS[row.control] for row in ACTIONS} | {MARK_HOST: _mark_host})
#: Each control's required arguments and the optional ones it also takes.
ARGUMENTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {row.control: (row.target.arguments, row.options) for row in ACTIONS} | {MARK_HOST: (("host", "state"), ())})


def apply_control(scheduler: Scheduler, session: Session, action: str, args: dict[str, Any]) -> str:
    """Apply the control named ``action`` with ``args``; refused (nothing written) when it is not a known
    control or lacks an argument it needs."""
    control = CONTROLS.get(action)
    if control is None:
        raise ControlRefused(f"unknown control {action!r}; expected one of {', '.join(CONTROLS)}")
    required, optional = ARGUMENTS[action]
    missing = [name for name in required if name not in args]
    unknown = sorted(set(args) - set(required) - set(optional))
    if missing or unknown:
        raise ControlRefused(f"{action}: arguments {', '.join(sorted(args)) or 'none'}: expected "
                             f"{', '.join(required)}{' and optionally ' + ', '.join(optional) if optional else ''}")
    return control(scheduler, session, args)
