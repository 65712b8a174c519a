"""The operator actions in one table, and the site's queues they may name (hand-written, not generated).

Every surface that lets an operator act is derived from :data:`ACTIONS`: the envelope's
allow-list and target check (``ops_agent.envelope``), the agent's handlers
(``ops_agent.actions``), the site's control registry (``site_scheduler.controls``), the site
API's allow-list (``site_scheduler.api``) and the commands ``cinefleet ops ACTION`` and
``cinefleet site ACTION``. A new row here shows up in all of them; an action that is not a row
cannot be signed, verified, run or typed, whatever a sender puts on the wire.

It lives in ``protos`` because it is part of the contract between the processes (the agent,
the site and, later, the control plane), and because every component may import ``protos``
and nothing else in common.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from protos import ops_agent_pb2 as pb

#: The site's queues by resource type (spec §13): the only names a queue action may target.
QUEUES = ("cpu_queue", "local_ai_queue", "media_queue", "external_ai_queue")

Target = pb.WorkerRef | pb.QueueRef | pb.RunRef | pb.StageRef


class ActionInputError(ValueError):
    """Raised when an action name or its target ids do not fit the table; nothing was signed or sent."""


class UnknownAction(ActionInputError):
    """Raised when an action name or number is not a row of :data:`ACTIONS`."""


class BadTarget(ActionInputError):
    """Raised when an action is given the wrong number or kind of target ids."""


@dataclass(frozen=True)
class TargetKind:
    """What an action acts on: the ``CommandPayload.target`` oneof field and how its ids reach the site.

    ``ids`` pairs each field of the proto message with the site control argument that carries it,
    in the order an operator types them (``RUN STAGE``).
    """

    field: str
    message: type[Target]
    ids: tuple[tuple[str, str], ...]

    @property
    def arguments(self) -> tuple[str, ...]:
        """The site control's arguments for this target, e.g. ``("run", "stage")``."""
        return tuple(argument for _, argument in self.ids)

    @property
    def shape(self) -> str:
        """How the ids are typed on a command line, e.g. ``RUN STAGE``."""
        return " ".join(argument.upper() for argument in self.arguments)

    def build(self, values: Sequence[str]) -> Target:
        """The typed target from its ids, in :attr:`ids` order."""
        if len(values) != len(self.ids):
            raise BadTarget(f"takes {self.shape}; got {len(values)} target value(s): {' '.join(values) or 'none'}")
        return self.message(**{name: value for (name, _), value in zip(self.ids, values, strict=True)})

    def values(self, target: Target) -> tuple[str, ...]:
        """The ids of ``target``, in :attr:`ids` order."""
        return tuple(str(getattr(target, name)) for name, _ in self.ids)


WORKER = TargetKind("worker", pb.WorkerRef, (("name", "worker"),))
QUEUE = TargetKind("queue", pb.QueueRef, (("name", "queue"),))
RUN = TargetKind("run", pb.RunRef, (("run_id", "run"),))
STAGE = TargetKind("stage", pb.StageRef, (("run_id", "run"), ("stage_id", "stage")))
#: Every target kind by its oneof field name.
TARGET_KINDS: Mapping[str, TargetKind] = MappingProxyType({k.field: k for k in (WORKER, QUEUE, RUN, STAGE)})


@dataclass(frozen=True)
class OperatorAction:
    """One row: the proto enum value, its target, the site control, the command name and what it risks.

    Parameters:
        action: the ``Action`` enum value signed into a command.
        target: what it acts on.
        control: the site control that carries it out (``SiteClient.control`` name).
        cli: the command name, ``cinefleet ops CLI ...`` and ``cinefleet site CLI ...``.
        destructive: it loses work or kills processes; the control plane asks for a confirmation.
        options: optional site control arguments beyond the target's ids; only the site's own
            commands and API set them (a signed command carries none, so the site's defaults apply).
        summary: one sentence for help texts.
    """

    action: pb.Action
    target: TargetKind
    control: str
    cli: str
    destructive: bool
    options: tuple[str, ...]
    summary: str

    @property
    def enum_name(self) -> str:
        return pb.Action.Name(self.action)

    def make_target(self, values: Sequence[str]) -> Target:
        """The typed target of this action from the ids an operator typed."""
        try:
            return self.target.build(values)
        except BadTarget as exc:
            raise BadTarget(f"{self.cli} {exc}") from None

    def control_args(self, target: Target) -> dict[str, str]:
        """The site control's arguments for ``target``: its ids under the control's argument names."""
        return dict(zip(self.target.arguments, self.target.values(target), strict=True))


#: The whole of what an operator can ask a site to do through a signed command.
ACTIONS: tuple[OperatorAction, ...] = (
    OperatorAction(pb.ACTION_DRAIN_WORKER, WORKER, "drain-worker", "drain-worker", False, ("deadline",),
                   "Stop a worker taking new jobs; in-flight jobs finish (or are requeued after the deadline, "
                   "default 1 h)."),
    OperatorAction(pb.ACTION_UNDRAIN_WORKER, WORKER, "undrain-worker", "undrain-worker", False, (),
                   "Let a drained worker take jobs again."),
    OperatorAction(pb.ACTION_RESTART_WORKER, WORKER, "restart-worker", "restart-worker", True, ("deadline",),
                   "Drain a worker (deadline default 30 s), then replace its process with a fresh one; nothing "
                   "is lost."),
    OperatorAction(pb.ACTION_PAUSE_QUEUE, QUEUE, "pause-queue", "pause-queue", False, (),
                   "Stop every new job of a queue at the site; running ones finish."),
    OperatorAction(pb.ACTION_RESUME_QUEUE, QUEUE, "resume-queue", "resume-queue", False, (),
                   "Resume a paused queue."),
    OperatorAction(pb.ACTION_CANCEL_RUN, RUN, "cancel-run", "cancel-run", True, (),
                   "Cancel a run: queued stages are skipped, running subprocesses killed, nothing published."),
    OperatorAction(pb.ACTION_RETRY_STAGE, STAGE, "retry-stage", "retry-stage", False, (),
                   "Re-enqueue a failed stage of a run, keeping its identity."),
)

#: The rows by enum value, by command name and by site control name.
BY_ENUM: Mapping[int, OperatorAction] = MappingProxyType({a.action: a for a in ACTIONS})
BY_CLI: Mapping[str, OperatorAction] = MappingProxyType({a.cli: a for a in ACTIONS})
BY_CONTROL: Mapping[str, OperatorAction] = MappingProxyType({a.control: a for a in ACTIONS})


def lookup(name: str | int) -> OperatorAction:
    """The row for an enum value, a command name (``pause-queue``) or an enum name (``ACTION_PAUSE_QUEUE``)."""
    if isinstance(name, int):
        if name in BY_ENUM:
            return BY_ENUM[name]
    elif name in BY_CLI:
        return BY_CLI[name]
    else:
        found = next((a for a in ACTIONS if a.enum_name == name), None)
        if found is not None:
            return found
    raise UnknownAction(f"action {name!r}: expected one of {', '.join(BY_CLI)}")
