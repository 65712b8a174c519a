"""The fleet's read model: what the API shows of sites, hosts, workers, queues and runs.

Pure queries over a :class:`~sqlalchemy.orm.Session`, returning pydantic models; the HTTP
routes are thin adapters over them. Every query takes a tenant scope: ``None`` sees every
tenant, a list sees those tenants' runs, stages and costs only. Sites, hosts, workers and queues
are infrastructure, not tenant data, and are shown to every scope, except a worker's current
job, which names a run and is blanked for a scoped caller.

Host states and site connections are derived at read time (:func:`control_plane.health.judge`).
Runs page by keyset on ``(submitted_at, site_id, run_id)``, newest first: a page's ``next`` is
an opaque cursor, stable under concurrent inserts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import case, func, select, tuple_
from sqlalchemy.orm import Session

from control_plane.errors import ControlInputError
from control_plane.health import DEFAULT_INTERVAL_S, Seen, SiteConnection, Verdict, judge, seen
from control_plane.ingest import RATE_TAU_S
from control_plane.tables import (
    CostRow,
    HostRow,
    HostSampleRow,
    QueueRow,
    RunRow,
    SiteHostRow,
    SiteRow,
    StageRow,
    WorkerRow,
)

#: Runs on one page unless asked for fewer.
PAGE_SIZE = 50
#: Seconds without a push or a host report before a site is disconnected, unless told otherwise.
SITE_TIMEOUT_S = 15.0
#: The most runs one page may hold.
MAX_PAGE_SIZE = 500
Scope = Sequence[str] | None


class QueryError(ControlInputError):
    """Raised for a query the read model cannot answer as asked; names the field, value and expectation."""


@dataclass(frozen=True)
class Liveness:
    """The thresholds liveness is judged with (``control serve`` options)."""

    interval_s: float = DEFAULT_INTERVAL_S
    #: A site heard from neither by push nor by host report for this long is disconnected (an idle
    #: site's shipper sends an empty push every 5 s).
    site_timeout_s: float = SITE_TIMEOUT_S


class SiteView(BaseModel):
    site_id: str
    connection: str
    reason: str
    heard_at: float | None
    first_seen_at: float | None
    last_push_at: float | None
    cursor: int
    site_head: int
    backlog: int
    applied_total: int
    lag_s: float | None
    events_per_s: float
    hosts: int


class HostView(BaseModel):
    site_id: str
    host: str
    state: str
    reasons: list[str]
    reported_state: str
    silent_for_s: float
    site_mark: str | None
    agent_address: str
    agent_tls: bool
    interval_s: float
    first_seen_at: float
    last_report_at: float
    load_1m: float
    load_5m: float
    cpu_count: int
    memory_used_bytes: int
    memory_total_bytes: int
    disks: list[dict[str, Any]]
    temperatures: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    trust_bundle_version: int
    trust_problem: str


class HostSample(BaseModel):
    received_at: float
    state: str
    load_1m: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_used_fraction: float
    workers_busy: int


class WorkerView(BaseModel):
    site_id: str
    name: str
    host: str
    pid: int
    status: str
    queues: list[str]
    current_job: str | None
    since: float
    builds: dict[str, str] | None = None
    refused: str | None = None
    drain_until: float | None = None
    updated_at: float


class QueueView(BaseModel):
    site_id: str
    name: str
    paused: bool
    completed: int
    updated_at: float


class RunView(BaseModel):
    site_id: str
    run_id: str
    tenant_id: str
    project_path: str
    project_hash: str
    status: str
    detail: str
    episode: str | None
    submitted_at: float
    finished_at: float | None
    updated_at: float


class StageView(BaseModel):
    stage_id: str
    kind: str
    queue: str
    identity: str
    status: str
    depends_on: list[str]
    output: str | None
    attempts: int
    worker: str | None
    error: str
    seconds: float | None
    #: The stage's artifact-cache hits and misses as the site counted them (None: not reported).
    cache_hits: int | None = None
    cache_misses: int | None = None
    updated_at: float


class CostView(BaseModel):
    stage_id: str
    attempt: int
    kind: str
    worker: str | None
    origin: str
    provider: str
    compute_seconds: float | None
    usd: float
    outcome: str


class RunDetail(RunView):
    stages: list[StageView]
    costs: list[CostView]


class RunsPage(BaseModel):
    items: list[RunView]
    next: str | None


class Summary(BaseModel):
    sites: dict[str, int]
    hosts: dict[str, int]
    workers: dict[str, int]
    queues: int
    queues_paused: int
    runs: dict[str, int]
    max_lag_s: float | None
    events_per_s: float


def _rate(site: SiteRow, now: float) -> float:
    """The site's decaying event rate as of ``now`` (it decays while nothing arrives)."""
    if site.rate_at is None:
        return 0.0
    return (site.events_per_s or 0.0) * math.exp(-max(0.0, now - site.rate_at) / RATE_TAU_S)


def _tenants(query: Any, column: Any, scope: Scope) -> Any:
    return query if scope is None else query.where(column.in_(list(scope)))


class Fleet:
    """The read model over one session, judged at one instant (``now``) with one set of thresholds."""

    def __init__(self, session: Session, liveness: Liveness | None = None, now: float | None = None) -> None:
        self.session, self.liveness = session, liveness or Liveness()
        self.now = time.time() if now is None else now
        self._judgement: tuple[list[Seen], dict[tuple[str, str], Verdict], dict[str, SiteConnection],
                               dict[str, SiteRow]] | None = None

    def _judged(self) -> tuple[list[Seen], dict[tuple[str, str], Verdict], dict[str, SiteConnection],
                               dict[str, SiteRow]]:
        """Every host judged: only the columns liveness needs are read (the whole fleet takes part).

        Judged once per read model: it stands for one instant, and a summary needs it twice.
        """
        if self._judgement is not None:
            return self._judgement
        hosts = seen(self.session.execute(select(HostRow.site_id, HostRow.host, HostRow.last_report_at,
                                                 HostRow.interval_s, HostRow.reported_state, HostRow.reasons)))
        sites = {s.site_id: s for s in self.session.scalars(select(SiteRow))}
        verdicts, connections = judge(hosts, {k: s.last_push_at for k, s in sites.items()}, self.now,
                                      self.liveness.site_timeout_s)
        self._judgement = hosts, verdicts, connections, sites
        return self._judgement

    def host_states(self) -> dict[tuple[str, str], Verdict]:
        """Every host's state and reasons by ``(site_id, host)``, judged now, without loading its report."""
        return self._judged()[1]

    def sites(self, scope: Scope = None) -> list[SiteView]:
        hosts, _verdicts, connections, sites = self._judged()
        counts: dict[str, int] = {}
        for h in hosts:
            counts[h.site_id] = counts.get(h.site_id, 0) + 1
        views = []
        for site_id in sorted(connections):
            row, link = sites.get(site_id), connections[site_id]
            views.append(SiteView(
                site_id=site_id, connection=link.state, reason=link.reason, heard_at=link.heard_at,
                first_seen_at=row.first_seen_at if row else None, last_push_at=row.last_push_at if row else None,
                cursor=row.cursor if row else 0, site_head=row.site_head if row else 0,
                backlog=max(0, row.site_head - row.cursor) if row else 0,
                applied_total=row.applied_total if row else 0, lag_s=row.lag_s if row else None,
                events_per_s=_rate(row, self.now) if row else 0.0, hosts=counts.get(site_id, 0)))
        return views

    def hosts(self, scope: Scope = None, site_id: str | None = None, state: str | None = None,
              host: str | None = None, limit: int | None = None) -> list[HostView]:
        """Hosts in ``(site_id, host)`` order; ``limit``: at most that many (a page needs no thousand reports)."""
        _seen, verdicts, _connections, _sites = self._judged()
        marks_query = select(SiteHostRow)
        query = select(HostRow).order_by(HostRow.site_id, HostRow.host)
        if site_id is not None:
            query = query.where(HostRow.site_id == site_id)
            marks_query = marks_query.where(SiteHostRow.site_id == site_id)
        if host is not None:
            query = query.where(HostRow.host == host)
        if limit is not None and state is None:
            query = query.limit(limit)
        marks = {(m.site_id, m.host): m.state for m in self.session.scalars(marks_query)}
        views: list[HostView] = []
        for h in self.session.scalars(query.execution_options(yield_per=100)):
            if limit is not None and len(views) >= limit:
                break
            verdict = verdicts.get((h.site_id, h.host))
            if verdict is None or (state is not None and verdict.state != state):  # None: it arrived just now
                continue
            views.append(HostView(
                site_id=h.site_id, host=h.host, state=verdict.state, reasons=list(verdict.reasons),
                reported_state=h.reported_state, silent_for_s=verdict.silent_for_s,
                site_mark=marks.get((h.site_id, h.host)), agent_address=h.agent_address, agent_tls=h.agent_tls,
                interval_s=h.interval_s, first_seen_at=h.first_seen_at, last_report_at=h.last_report_at,
                load_1m=h.load_1m, load_5m=h.load_5m, cpu_count=h.cpu_count, memory_used_bytes=h.memory_used_bytes,
                memory_total_bytes=h.memory_total_bytes, disks=h.disks, temperatures=h.temperatures,
                workers=h.workers if scope is None else [{**w, "current_job": ""} for w in h.workers],
                trust_bundle_version=h.trust_bundle_version, trust_problem=h.trust_problem))
        return views

    def host_history(self, site_id: str, host: str, since: float | None = None, scope: Scope = None
                     ) -> list[HostSample]:
        query = select(HostSampleRow).where(HostSampleRow.site_id == site_id, HostSampleRow.host == host)
        if since is not None:
            query = query.where(HostSampleRow.received_at >= since)
        return [HostSample.model_validate(r, from_attributes=True)
                for r in self.session.scalars(query.order_by(HostSampleRow.received_at))]

    def workers(self, scope: Scope = None, site_id: str | None = None, status: str | None = None,
                limit: int | None = None) -> list[WorkerView]:
        query = select(WorkerRow).order_by(WorkerRow.site_id, WorkerRow.name)
        if site_id is not None:
            query = query.where(WorkerRow.site_id == site_id)
        if status is not None:
            query = query.where(WorkerRow.status == status)
        if limit is not None:
            query = query.limit(limit)
        views = [WorkerView.model_validate(r, from_attributes=True) for r in self.session.scalars(query)]
        return views if scope is None else [v.model_copy(update={"current_job": None}) for v in views]

    def queues(self, scope: Scope = None, site_id: str | None = None) -> list[QueueView]:
        query = select(QueueRow).order_by(QueueRow.site_id, QueueRow.name)
        if site_id is not None:
            query = query.where(QueueRow.site_id == site_id)
        return [QueueView.model_validate(r, from_attributes=True) for r in self.session.scalars(query)]

    def runs(self, scope: Scope = None, *, status: Sequence[str] = (), site_id: str | None = None,
             tenant_id: str | None = None, project: str | None = None, submitted_from: float | None = None,
             submitted_to: float | None = None, limit: int = PAGE_SIZE, after: str | None = None,
             oldest_first: bool = False) -> RunsPage:
        """Runs newest first (or oldest first), filtered; ``after`` is the ``next`` of the previous page."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise QueryError(f"limit: value {limit}: expected 1 to {MAX_PAGE_SIZE}")
        order = (RunRow.submitted_at, RunRow.site_id, RunRow.run_id)
        query = _tenants(select(RunRow), RunRow.tenant_id, scope)
        if status:
            query = query.where(RunRow.status.in_(list(status)))
        if site_id is not None:
            query = query.where(RunRow.site_id == site_id)
        if tenant_id is not None:
            query = query.where(RunRow.tenant_id == tenant_id)
        if project is not None:
            query = query.where(RunRow.project_hash == project)
        if submitted_from is not None:
            query = query.where(RunRow.submitted_at >= submitted_from)
        if submitted_to is not None:
            query = query.where(RunRow.submitted_at < submitted_to)
        if after is not None:
            position = tuple_(*decode_cursor(after))
            query = query.where(tuple_(*order) > position if oldest_first else tuple_(*order) < position)
        sort = [c.asc() if oldest_first else c.desc() for c in order]
        rows = list(self.session.scalars(query.order_by(*sort).limit(limit + 1)))
        more = len(rows) > limit
        items = [RunView.model_validate(r, from_attributes=True) for r in rows[:limit]]
        last = items[-1] if more else None
        return RunsPage(items=items, next=encode_cursor(last.submitted_at, last.site_id, last.run_id) if last else None)

    def run(self, site_id: str, run_id: str, scope: Scope = None) -> RunDetail | None:
        """One run with its stages and costs; None when absent or outside the scope (the same answer)."""
        row = self.session.get(RunRow, (site_id, run_id))
        if row is None or (scope is not None and row.tenant_id not in scope):
            return None
        stages = self.session.scalars(select(StageRow).where(StageRow.site_id == site_id, StageRow.run_id == run_id)
                                      .order_by(StageRow.stage_id))
        costs = self.session.scalars(select(CostRow).where(CostRow.site_id == site_id, CostRow.run_id == run_id)
                                     .order_by(CostRow.stage_id, CostRow.attempt))
        return RunDetail(**RunView.model_validate(row, from_attributes=True).model_dump(),
                         stages=[StageView.model_validate(s, from_attributes=True) for s in stages],
                         costs=[CostView.model_validate(c, from_attributes=True) for c in costs])

    def summary(self, scope: Scope = None) -> Summary:
        sites = self.sites(scope)
        _seen, verdicts, _connections, _sites = self._judged()
        count = func.count()
        workers = {status: n for status, n in self.session.execute(
            select(WorkerRow.status, count).group_by(WorkerRow.status))}
        runs = {status: n for status, n in self.session.execute(
            _tenants(select(RunRow.status, count), RunRow.tenant_id, scope).group_by(RunRow.status))}
        queues, paused = self.session.execute(select(count, func.sum(case((QueueRow.paused, 1), else_=0)))).one()
        lags = [s.lag_s for s in sites if s.lag_s is not None]
        return Summary(sites=_tally(s.connection for s in sites), hosts=_tally(v.state for v in verdicts.values()),
                       workers=workers, queues=queues or 0, queues_paused=int(paused or 0), runs=runs,
                       max_lag_s=max(lags) if lags else None, events_per_s=sum(s.events_per_s for s in sites))


def _tally(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def encode_cursor(submitted_at: float, site_id: str, run_id: str) -> str:
    raw = json.dumps([submitted_at, site_id, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        submitted_at, site_id, run_id = value
        if not isinstance(submitted_at, int | float) or not isinstance(site_id, str) or not isinstance(run_id, str):
            raise TypeError
    except (ValueError, TypeError, binascii.Error):
        raise QueryError(f"cursor: value {cursor[:80]!r}: expected the `next` of a previous page") from None
    return float(submitted_at), site_id, run_id
