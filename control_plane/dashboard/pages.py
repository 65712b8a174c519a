"""The dashboard's pages in one table: URL → view, template, navigation label and the least role.

Each view is a thin adapter: it reads its query parameters (bad ones are a ``ControlInputError``
naming the field), asks the cores (:class:`~control_plane.fleet.Fleet`,
:class:`~control_plane.commands.Commands`, :mod:`control_plane.audit`) and returns what its
template shows. Nothing here decides who may see what beyond the table's role: the cores scope
every listing to the caller's tenants. A new page is a new row of :data:`PAGES` (and a template).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.datastructures import QueryParams

from control_plane import audit
from control_plane.commands import AWAITING_APPROVAL, STATUSES, Commands
from control_plane.costs import Budgets
from control_plane.dashboard import charts
from control_plane.dashboard.alert_pages import alert_page, alerts_page, firing_count
from control_plane.dashboard.glance import Glance
from control_plane.dashboard.lineage_cost import cost_page, lineage_diff_page, lineage_page
from control_plane.dashboard.live import run_version
from control_plane.dashboard.load import QueueLoad
from control_plane.errors import ControlInputError, NotFound
from control_plane.fleet import PAGE_SIZE, Fleet, RunView
from control_plane.health import HOST_STATES
from control_plane.people import Principal, Role
from control_plane.tables import SiteRow
from protos.actions import QUEUES

#: What a run's status filter offers (the site's run states).
RUN_STATUSES = ("queued", "running", "completed", "failed", "blocked", "cancelled")
LIVE_RUN = ("queued", "running")
WORKER_STATUSES = ("idle", "active", "draining", "drained", "offline")
#: The runs list's orders (by submission time; keyset pages either way).
SORTS = ("newest", "oldest")
#: Commands and audit rows on one page.
LIST_SIZE = 50
#: Runs shown in flight and failed on the fleet page.
FLEET_RUNS = 10
#: Unhealthy hosts named on the fleet page (the rest are counted, and listed on the hosts page).
WARNED_HOSTS = 20
#: Rows a hosts or workers page shows at most: a thousand hosts are found by filtering, not by scrolling.
MAX_ROWS = 100


@dataclass
class View:
    """One page view: who asks, the read model judged now, and the request's parameters."""

    principal: Principal
    fleet: Fleet
    engine: Engine
    commands: Commands
    query: QueryParams
    path: Mapping[str, str]
    #: The fleet page's shared fleet-wide figures (one per process).
    glance: Glance
    #: The cost page's thresholds (``DIR/budgets.json``); none by default.
    budgets: Budgets = field(default_factory=Budgets)

    @property
    def scope(self) -> list[str] | None:
        return None if self.principal.tenants is None else sorted(self.principal.tenants)

    @property
    def now(self) -> float:
        return self.fleet.now

    def text(self, name: str, limit: int = 128) -> str | None:
        """A query parameter, stripped; empty means absent; longer than ``limit`` is bad input."""
        value = (self.query.get(name) or "").strip()
        if len(value) > limit:
            raise ControlInputError(f"{name}: value {value[:40]!r}...: expected at most {limit} characters")
        return value or None

    def choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is not None and value not in allowed:
            raise ControlInputError(f"{name}: value {value!r}: expected one of {', '.join(allowed)}")
        return value

    def day(self, name: str) -> float | None:
        """A ``YYYY-MM-DD`` date parameter as unix seconds at 00:00 UTC."""
        value = self.text(name, 10)
        if value is None:
            return None
        try:
            return dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise ControlInputError(f"{name}: value {value!r}: expected a date YYYY-MM-DD") from None



@dataclass(frozen=True)
class Page:
    """A row of the pages table. ``nav``: the label in the navigation bar (None: reached by links only)."""

    path: str
    template: str
    nav: str | None
    role: Role
    view: Callable[[View], dict[str, Any]]
    title: str


def fleet_page(v: View) -> dict[str, Any]:
    """The whole fleet at a glance; the numbers update live over server-sent events.

    The fleet-wide figures come from the process's :class:`~control_plane.dashboard.glance.Glance`
    (at most a tick old, as the live numbers are); the short lists below them are read per request.
    """
    seen = v.glance.get(v.scope)
    sites = seen["sites"]
    depth: dict[str, dict[str, int]] = {}
    for (site_id, queue), load in seen["loads"].items():
        depth.setdefault(site_id, {})[queue] = load.waiting
    warnings = [f"site {s.site_id} is disconnected: {s.reason}" for s in sites if s.connection != "connected"]
    unhealthy = seen["unhealthy"]
    warnings += [f"host {site_id}/{host} is {verdict.state}: {'; '.join(verdict.reasons) or 'no reason given'}"
                 for (site_id, host), verdict in unhealthy[:WARNED_HOSTS]]
    if len(unhealthy) > WARNED_HOSTS:
        warnings.append(f"... and {len(unhealthy) - WARNED_HOSTS} more hosts: see the Hosts page")
    warnings += [f"queue {q.site_id}/{q.name} is paused" for q in v.fleet.queues(v.scope) if q.paused]
    return {"summary": seen["summary"], "sites": sites, "depth": depth, "queues": QUEUES,
            "warnings": warnings,
            "in_flight": sorted((r for status in LIVE_RUN for r in v.fleet.runs(v.scope, status=(status,),
                                                                                 limit=FLEET_RUNS).items),
                                key=lambda r: (r.submitted_at, r.site_id, r.run_id), reverse=True)[:FLEET_RUNS],
            "failures": v.fleet.runs(v.scope, status=("failed",), limit=FLEET_RUNS).items,
            "host_states": (*HOST_STATES, "disconnected"), "firing": firing_count(v.fleet.session, v.scope)}


def runs_page(v: View) -> dict[str, Any]:
    """Runs newest first by keyset pages, filtered; a run id typed in the search box is looked up at every site."""
    found: list[RunView] | None = None
    wanted = v.text("q", 64)
    if wanted is not None:
        found = [r for site_id in _site_ids(v) if (r := v.fleet.run(site_id, wanted, v.scope)) is not None]
    statuses = v.query.getlist("status")
    for status in statuses:
        if status not in RUN_STATUSES:
            raise ControlInputError(f"status: value {status!r}: expected one of {', '.join(RUN_STATUSES)}")
    submitted_to = v.day("to")
    page = v.fleet.runs(v.scope, status=statuses, site_id=v.text("site", 64), tenant_id=v.text("tenant", 64),
                        project=v.text("project", 64), submitted_from=v.day("from"),
                        submitted_to=None if submitted_to is None else submitted_to + 86400,
                        after=v.text("after", 512), limit=PAGE_SIZE,
                        oldest_first=v.choice("sort", SORTS) == "oldest")
    return {"page": page, "found": found, "q": wanted or "", "statuses": RUN_STATUSES, "chosen": set(statuses),
            "filters": {k: v.query.get(k, "") for k in ("site", "tenant", "project", "from", "to", "sort")},
            "sorts": SORTS,
            "sites": _site_ids(v),
            "next_query": _with(v.query, after=page.next) if page.next else None}


def run_page(v: View) -> dict[str, Any]:
    """One run: a timeline per worker, every stage, the artifacts it made, what it cost, and its actions."""
    site_id, run_id = v.path["site_id"], v.path["run_id"]
    run = v.fleet.run(site_id, run_id, v.scope)
    if run is None:  # absent, or another tenant's: the same answer
        raise NotFound(f"run {run_id!r}: no such run at site {site_id!r}")
    artifacts = sorted({(s.kind, s.output) for s in run.stages if s.output})
    return {"run": run, "timeline": charts.timeline(run.stages, v.now), "artifacts": artifacts,
            "live": run.status in LIVE_RUN, "compute_s": sum(c.compute_seconds or 0.0 for c in run.costs),
            "usd": sum(c.usd for c in run.costs), "version": run_version(run)}


def queues_page(v: View) -> dict[str, Any]:
    """Per site and queue: depth, in flight, jobs in the last hour, the ETA to drain it, paused."""
    site = v.text("site", 64)
    loads = v.glance.get(v.scope)["loads"]  # infrastructure, the same for every scope; at most a tick old
    rows = [(q, loads.get((q.site_id, q.name), QueueLoad(q.site_id, q.name))) for q in v.fleet.queues(v.scope, site)]
    return {"rows": rows, "site": site or ""}


def workers_page(v: View) -> dict[str, Any]:
    """Per worker: status, current job, host, and the drain / undrain / restart buttons; filtered by site, status."""
    site, status = v.text("site", 64), v.choice("status", WORKER_STATUSES)
    workers = v.fleet.workers(v.scope, site, status, limit=MAX_ROWS + 1)
    return {"workers": workers[:MAX_ROWS], "more": len(workers) > MAX_ROWS, "site": site or "",
            "status": status or "", "statuses": WORKER_STATUSES}


def hosts_page(v: View) -> dict[str, Any]:
    site = v.text("site", 64)
    state = v.choice("state", (*HOST_STATES, "disconnected"))
    hosts = v.fleet.hosts(v.scope, site, state, limit=MAX_ROWS + 1)
    return {"hosts": hosts[:MAX_ROWS], "more": len(hosts) > MAX_ROWS, "site": site or "", "state": state or "",
            "states": (*HOST_STATES, "disconnected")}


def host_page(v: View) -> dict[str, Any]:
    """One host: its state and reasons, disks against their high-water marks, the last hour, its workers."""
    site_id, name = v.path["site_id"], v.path["host"]
    host = next(iter(v.fleet.hosts(v.scope, site_id, host=name)), None)
    if host is None:
        raise NotFound(f"host {name!r}: no such host at site {site_id!r}")
    samples = v.fleet.host_history(site_id, name, v.now - 3600, v.scope)
    return {"host": host, "series": charts.history(samples, v.now), "samples": len(samples),
            "chart": (charts.WIDTH, charts.HEIGHT),
            "workers": [w for w in v.fleet.workers(v.scope, site_id) if w.host == name]}


def commands_page(v: View) -> dict[str, Any]:
    """Commands newest first; those awaiting approval on top, with Approve for another operator."""
    status, site = v.choice("status", STATUSES), v.text("site", 64)
    listed = v.commands.list(v.principal, site=site, status=status, after=v.text("after", 64), limit=LIST_SIZE)
    pending = v.commands.list(v.principal, status=AWAITING_APPROVAL, limit=LIST_SIZE)
    return {"commands": listed, "pending": pending, "status": status or "", "statuses": STATUSES, "site": site or "",
            "next_query": _with(v.query, after=listed[-1].command_id) if len(listed) == LIST_SIZE else None}


def command_page(v: View) -> dict[str, Any]:
    command = v.commands.get(v.path["command_id"])
    if not v.commands.visible(v.principal, command):  # another tenant's: as if it did not exist
        raise NotFound(f"command {command.command_id!r}: no such command")
    return {"command": command}


def audit_page(v: View) -> dict[str, Any]:
    """Audit rows newest last from ``after``; ``verify=1`` walks the whole chain (on demand: it reads every row)."""
    v.principal.require(Role.ADMIN, None)  # every tenant's rows: admins of every tenant, as in the API
    kind = v.choice("kind", tuple(sorted(audit.KINDS)))
    raw = v.text("after", 20) or "0"
    if not raw.isdigit():
        raise ControlInputError(f"after: value {raw!r}: expected a seq number")
    with v.engine.connect() as connection:
        entries = audit.entries(connection, after=int(raw), limit=LIST_SIZE, kind=kind)
    report = audit.verify(v.engine) if v.query.get("verify") == "1" else None
    return {"entries": entries, "report": report, "kind": kind or "", "kinds": sorted(audit.KINDS),
            "next_query": _with(v.query, after=str(entries[-1].seq)) if len(entries) == LIST_SIZE else None}


def _site_ids(v: View) -> list[str]:
    """Every site the centre has heard of (the run-id search looks in each, by its primary key)."""
    return list(v.fleet.session.scalars(select(SiteRow.site_id).order_by(SiteRow.site_id)))


def _with(query: QueryParams, **changes: str | None) -> str:
    """The query string with ``changes`` applied (the next page's link keeps the filters)."""
    items = [(k, val) for k, val in query.multi_items() if k not in changes]
    items += [(k, val) for k, val in changes.items() if val is not None]
    return str(QueryParams(items))


#: Every page: URL, template, nav label, least role, view, title. The navigation bar follows this order.
PAGES: list[Page] = [
    Page("/", "fleet.html", "Fleet", Role.VIEWER, fleet_page, "Fleet"),
    Page("/runs", "runs.html", "Runs", Role.VIEWER, runs_page, "Runs"),
    Page("/runs/{site_id}/{run_id}", "run.html", None, Role.VIEWER, run_page, "Run"),
    Page("/runs/{site_id}/{run_id}/lineage", "lineage.html", None, Role.VIEWER, lineage_page, "Lineage"),
    Page("/lineage", "lineage_diff.html", None, Role.VIEWER, lineage_diff_page, "Lineage diff"),
    Page("/cost", "cost.html", "Cost", Role.VIEWER, cost_page, "Cost"),
    Page("/queues", "queues.html", "Queues", Role.VIEWER, queues_page, "Queues"),
    Page("/workers", "workers.html", "Workers", Role.VIEWER, workers_page, "Workers"),
    Page("/hosts", "hosts.html", "Hosts", Role.VIEWER, hosts_page, "Hosts"),
    Page("/hosts/{site_id}/{host}", "host.html", None, Role.VIEWER, host_page, "Host"),
    Page("/alerts", "alerts.html", "Alerts", Role.VIEWER, alerts_page, "Alerts"),
    Page("/alerts/{alert_id}", "alert.html", None, Role.VIEWER, alert_page, "Alert"),
    Page("/commands", "commands.html", "Commands", Role.VIEWER, commands_page, "Commands"),
    Page("/commands/{command_id}", "command.html", None, Role.VIEWER, command_page, "Command"),
    Page("/audit", "audit.html", "Audit", Role.ADMIN, audit_page, "Audit"),
]

