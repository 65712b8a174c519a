"""What an agent does with a verified command: the operator action's site control, nothing else.

The actions are the rows of :data:`protos.actions.ACTIONS`; each runs as the site control its
row names (``SiteClient.control``) with the ids of the command's typed target as arguments,
nothing else. There is no dispatch on a string from the wire, no shell and no free-form
argument: an action that is not a row cannot run, whatever a command says (deny by default).

:class:`Targets` answers the verifier's "does the target exist here?" question cheaply: queues
from the site's fixed queue list (no I/O), workers from the site's worker table (one query;
only workers that report this agent's host count), runs and stages from the site database.

The envelope carries no parameters, so drain and restart use the site's own deadlines
(1 h and 30 s, ``site_scheduler.controls``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from protos import ops_agent_pb2 as pb
from protos.actions import BY_ENUM, QUEUES, UnknownAction

if TYPE_CHECKING:
    from site_scheduler.client import SiteClient


def execute(payload: pb.CommandPayload, site: SiteClient) -> str:
    """Carry out a verified payload's action on its target through the site; returns the site's answer.

    Raises:
        protos.actions.UnknownAction: the action is not a row of the table or its target is of the
            wrong kind (the verifier refuses both first; this is the second lock).
        site_scheduler.errors.ControlRefused: the site refused it (wrong state); nothing changed.
        site_scheduler.errors.SiteError: the site could not be reached.
    """
    row = BY_ENUM.get(payload.action)
    given = payload.WhichOneof("target")
    if row is None or given != row.target.field:
        raise UnknownAction(f"action {payload.action} with target {given}: not allow-listed")
    return site.control(row.control, **row.control_args(getattr(payload, given)))


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
