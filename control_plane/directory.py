"""Where a command goes, from what the fleet tables know: the :class:`~control_plane.commands.AgentDirectory`
of a running centre.

A worker's command goes to the agent of the host the site says runs that worker (an agent acts
only on workers bound to its host, so any other choice would be refused there). A queue, run or
stage command is a site control: any agent of the site can carry it, so it goes to the healthy
host heard from most recently, or a degraded one when no host is healthy (degraded hosts take no
new jobs, but they still relay a control). Offline and disconnected hosts are never chosen: a
command for a site the centre cannot hear fails here, saying why, instead of waiting on a dead
address.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.errors import NotFound, Unreachable
from control_plane.fleet import Fleet, HostView, Liveness
from control_plane.tables import RunRow, WorkerRow
from protos import ops_agent_pb2 as pb
from protos.actions import Target

#: Host states whose agent may be sent a command, best first.
REACHABLE = ("healthy", "degraded")


class FleetDirectory:
    """Picks the agent for a command from the replicated workers and the hosts' reports.

    Parameters:
        engine: the fleet database.
        liveness: the thresholds host states are judged with (those of ``control serve``).
    """

    def __init__(self, engine: Engine, liveness: Liveness | None = None) -> None:
        self.engine, self.liveness = engine, liveness or Liveness()

    def agent_for(self, site_id: str, action: str, target: Target) -> tuple[str, str]:
        with Session(self.engine) as session:
            hosts = Fleet(session, self.liveness).hosts(site_id=site_id)
            if isinstance(target, pb.WorkerRef):
                worker = session.get(WorkerRow, (site_id, target.name))
                if worker is None:
                    raise NotFound(f"worker {target.name!r}: the centre knows no such worker at site {site_id!r}")
                hosts = [h for h in hosts if h.host == worker.host]
                if not hosts:
                    raise Unreachable(f"worker {target.name!r} runs on host {worker.host!r}, whose agent has never "
                                      f"reported to the centre; nothing was sent")
        return _pick(site_id, action, hosts)

    def tenant_of(self, site_id: str, target: Target) -> str | None:
        if not isinstance(target, pb.RunRef | pb.StageRef):
            return None  # workers and queues are the site's infrastructure, of no tenant
        with Session(self.engine) as session:
            run = session.get(RunRow, (site_id, target.run_id))
            if run is None:
                raise NotFound(f"run {target.run_id!r}: the centre knows no such run at site {site_id!r}")
            return run.tenant_id


def _pick(site_id: str, action: str, hosts: list[HostView]) -> tuple[str, str]:
    """The best reachable host of ``hosts`` (healthy before degraded, most recently heard first)."""
    reachable = [h for h in hosts if h.state in REACHABLE and h.agent_address]
    if not reachable:
        if not hosts:
            raise NotFound(f"site {site_id!r}: no agent has reported to the centre; {action} cannot be sent")
        states = ", ".join(f"{h.host} {h.state}" for h in hosts)
        raise Unreachable(f"{action} at site {site_id!r}: no host's agent can take it ({states}); nothing was sent")
    best = min(reachable, key=lambda h: (REACHABLE.index(h.state), -h.last_report_at, h.host))
    return best.host, best.agent_address
