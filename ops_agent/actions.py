"""The six operator actions an agent carries out, as a fixed table, and what they act on.

Every allow-listed :class:`~protos.ops_agent_pb2.Action` maps to one function that calls the
site's control API (``SiteClient.control``) with a fixed control name and the ids of the
command's typed target, nothing else. There is no dispatch by name, no ``getattr`` on a
string from the wire, no shell and no free-form argument: an action missing from
:data:`HANDLERS` cannot run, whatever a command says (deny by default).

:class:`Targets` answers the verifier's "does the target exist here?" question cheaply: queues
from the site's fixed queue list (no I/O), workers from the site's worker table (one query;
only workers that report this agent's host count), runs and stages from the site database.

The envelope carries no parameters, so drain and restart use the site's own deadlines
(1 h and 30 s, ``site_scheduler.controls``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ops_agent.envelope import TARGET_OF_ACTION, Target
from ops_agent.errors import AgentError
from protos import ops_agent_pb2 as pb
from site_scheduler.keys import QUEUES

if TYPE_CHECKING:
    from site_scheduler.client import SiteClient

#: The one-word name of each action, as ``cinefleet ops`` and the site's controls spell it.
ACTION_NAMES: Mapping[int, str] = MappingProxyType({
    pb.ACTION_DRAIN_WORKER: "drain-worker",
    pb.ACTION_UNDRAIN_WORKER: "undrain-worker",
    pb.ACTION_RESTART_WORKER: "restart-worker",
    pb.ACTION_PAUSE_QUEUE: "pause-queue",
    pb.ACTION_RESUME_QUEUE: "resume-queue",
    pb.ACTION_CANCEL_RUN: "cancel-run",
    pb.ACTION_RETRY_STAGE: "retry-stage",
})
#: The reverse of :data:`ACTION_NAMES`.
ACTIONS_BY_NAME: Mapping[str, int] = MappingProxyType({name: action for action, name in ACTION_NAMES.items()})


class UnknownAction(AgentError):
    """Raised when an action name or number is not one of the allow-listed six."""


Handler = Callable[["SiteClient", Any], str]


def _drain_worker(site: SiteClient, target: pb.WorkerRef) -> str:
    return site.control("drain-worker", worker=target.name)


def _undrain_worker(site: SiteClient, target: pb.WorkerRef) -> str:
    return site.control("undrain-worker", worker=target.name)


def _restart_worker(site: SiteClient, target: pb.WorkerRef) -> str:
    return site.control("restart-worker", worker=target.name)


def _pause_queue(site: SiteClient, target: pb.QueueRef) -> str:
    return site.control("pause-queue", queue=target.name)


def _resume_queue(site: SiteClient, target: pb.QueueRef) -> str:
    return site.control("resume-queue", queue=target.name)


def _cancel_run(site: SiteClient, target: pb.RunRef) -> str:
    return site.control("cancel-run", run=target.run_id)


def _retry_stage(site: SiteClient, target: pb.StageRef) -> str:
    return site.control("retry-stage", run=target.run_id, stage=target.stage_id)


#: The whole of what an agent can do. Read-only; an action absent here is refused.
HANDLERS: Mapping[int, Handler] = MappingProxyType({
    pb.ACTION_DRAIN_WORKER: _drain_worker,
    pb.ACTION_UNDRAIN_WORKER: _undrain_worker,
    pb.ACTION_RESTART_WORKER: _restart_worker,
    pb.ACTION_PAUSE_QUEUE: _pause_queue,
    pb.ACTION_RESUME_QUEUE: _resume_queue,
    pb.ACTION_CANCEL_RUN: _cancel_run,
    pb.ACTION_RETRY_STAGE: _retry_stage,
})


def execute(payload: pb.CommandPayload, site: SiteClient) -> str:
    """Carry out a verified payload's action on its target through the site; returns the site's answer.

    Raises:
        UnknownAction: the action is not in :data:`HANDLERS` or its target is of the wrong kind
            (the verifier refuses both first; this is the second lock).
        site_scheduler.errors.ControlRefused: the site refused it (wrong state); nothing changed.
        site_scheduler.errors.SiteError, redis and database errors: the site could not be reached.
    """
    handler = HANDLERS.get(payload.action)
    kind = TARGET_OF_ACTION.get(payload.action)
    if handler is None or kind is None or payload.WhichOneof("target") != kind:
        raise UnknownAction(f"action {payload.action} with target {payload.WhichOneof('target')}: not allow-listed")
    return handler(site, getattr(payload, kind))


def action_number(name: str) -> int:
    """The Action for a name such as ``pause-queue`` (or ``ACTION_PAUSE_QUEUE``)."""
    if name in ACTIONS_BY_NAME:
        return ACTIONS_BY_NAME[name]
    by_enum_name = {pb.Action.Name(action): action for action in HANDLERS}
    if name in by_enum_name:
        return by_enum_name[name]
    raise UnknownAction(f"action {name!r}: expected one of {', '.join(ACTIONS_BY_NAME)}")


def make_target(action: int, names: Sequence[str]) -> Target:
    """The typed target of ``action`` from its ids: a worker, queue or run name, or ``RUN STAGE``."""
    kind = TARGET_OF_ACTION.get(action)
    if kind is None:
        raise UnknownAction(f"action {action}: expected one of {', '.join(ACTIONS_BY_NAME)}")
    wanted = 2 if kind == "stage" else 1
    if len(names) != wanted:
        shape = "RUN STAGE" if kind == "stage" else kind.upper()
        raise ValueError(f"{ACTION_NAMES[action]} takes {shape}; got {len(names)} target value(s): "
                         f"{' '.join(names) or 'none'}")
    if kind == "worker":
        return pb.WorkerRef(name=names[0])
    if kind == "queue":
        return pb.QueueRef(name=names[0])
    if kind == "run":
        return pb.RunRef(run_id=names[0])
    return pb.StageRef(run_id=names[0], stage_id=names[1])


class Targets:
    """The verifier's ``target_exists``: None when the payload's target exists for this host, else why not.

    Parameters:
        host, site: this agent's host id and site id.
        client: returns the site client to read with (may raise the site's errors, which the caller
            treats as "cannot tell": the command fails without using its nonce).
    """

    def __init__(self, host: str, site: str, client: Callable[[], SiteClient]) -> None:
        self.host, self.site, self._client = host, site, client

    def __call__(self, payload: pb.CommandPayload) -> str | None:
        kind = payload.WhichOneof("target")
        if kind == "queue":
            name = payload.queue.name
            return None if name in QUEUES else f"{name!r} is not a queue of site {self.site} ({', '.join(QUEUES)})"
        if kind == "worker":
            return self._worker(payload.worker.name)
        if kind == "run":
            return None if self._client().run(payload.run.run_id) is not None else (
                f"{payload.run.run_id!r} does not exist on site {self.site}")
        if kind == "stage":
            run = self._client().run(payload.stage.run_id)
            if run is None:
                return f"its run {payload.stage.run_id!r} does not exist on site {self.site}"
            if not any(s["stage_id"] == payload.stage.stage_id for s in run["stages"]):
                return f"run {payload.stage.run_id} has no stage {payload.stage.stage_id!r}"
            return None
        return f"{kind}: not a target kind this agent knows"

    def _worker(self, name: str) -> str | None:
        rows = self._client().workers()
        row = next((w for w in rows if w["name"] == name), None)
        if row is None:
            mine = ", ".join(w["name"] for w in rows if w["host"] == self.host) or "none"
            return f"{name!r} is not a worker of site {self.site} (this host's: {mine})"
        if row["host"] != self.host:
            return f"{name!r} runs on host {row['host']!r}, not on this agent's host {self.host!r}"
        return None
