"""What is wrong with the fleet right now, read from the centre's tables alone (no site is asked).

Each evaluation returns the conditions that hold at ``now``; an alert whose condition is no longer
among them has resolved. Where a condition's source is:

* job_failed: a replicated stage in ``failed`` of a run in ``failed`` (sites do not retry on their
  own: a failed stage is final until an operator's ``retry-stage``); resolves when the stage runs
  again or the run is cancelled (someone dealt with it). A blocked run is canon_blocked instead.
* excessive_retries: a stage not done whose ``attempts`` exceed the threshold.
* canon_blocked: a run in ``blocked`` (a gate refused it; the run's detail names rule and facts).
* host_down: :func:`control_plane.health.judge` says ``offline`` (never for ``disconnected``). A host
  judged ``disconnected`` (its site is not heard either, or most of its site fell silent at once) is
  unknown, not back: its open host_down stays open (muted by the site's site_disconnected), never resolved.
* disk_full: a reported volume over its high-water mark (the agent's, or the configured fraction).
* site_disconnected: the judged site connection; replication_lagging: the site's lag or backlog.
* provider_unavailable: the last ``threshold`` cost rows of one non-local provider at a site all
  failed. Sites record every attempt as provider ``local`` today, so this cannot fire until
  provider stages exist.
* budget_exceeded: a tenant's cost rows of the last 24 h sum over its configured budget. Sites
  record ``usd = 0`` today, so this cannot fire until providers charge.

The observer guard: when most known sites (two at least) are disconnected at once the centre
suspects itself, raises no site_disconnected or host_down and leaves those already open alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.alerts.config import AlertConfig
from control_plane.health import judge, seen
from control_plane.tables import CostRow, HostRow, RunRow, SiteRow, StageRow, WorkerRow

#: Seconds of cost rows budget_exceeded sums.
BUDGET_WINDOW_S = 86400.0
#: Seconds of cost rows provider_unavailable looks at.
PROVIDER_WINDOW_S = 3600.0
#: Alert types the observer guard holds.
OBSERVER_TYPES = frozenset({"site_disconnected", "host_down"})


@dataclass(frozen=True)
class Condition:
    """One thing wrong, under its dedup key; ``occurrence`` tells a new event of it from the same one seen again."""

    key: str
    alert_type: str
    severity: str
    summary: str
    link: str
    occurrence: str
    site_id: str | None = None
    tenant_id: str | None = None
    run_id: str | None = None
    stage: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class Evaluation:
    conditions: dict[str, Condition]
    #: Types whose absence says nothing now (the observer guard): their open alerts are neither resolved nor raised.
    held: frozenset[str]
    #: Why they are held; "" when nothing is.
    held_because: str = ""
    #: Keys whose condition cannot be judged now (a host the centre cannot hear): an open alert under one is not
    #: resolved, and none is raised.
    unknown: frozenset[str] = frozenset()


def key(*parts: str | None) -> str:
    return "|".join(part or "" for part in parts)


def evaluate(session: Session, config: AlertConfig, now: float) -> Evaluation:
    found: list[Condition] = []
    found += _stages(session, config)
    found += _blocked(session, config)
    hosts, held, because, unknown = _hosts_and_sites(session, config, now)
    found += hosts
    found += _providers(session, config, now)
    found += _budgets(session, config, now)
    return Evaluation({c.key: c for c in found}, held, because, unknown)


def _stages(session: Session, config: AlertConfig) -> list[Condition]:
    hosts = {(w.site_id, w.name): w.host for w in session.execute(select(WorkerRow.site_id, WorkerRow.name,
                                                                         WorkerRow.host))}
    out: list[Condition] = []
    failed = session.execute(
        select(StageRow.site_id, StageRow.run_id, StageRow.stage_id, StageRow.tenant_id, StageRow.attempts,
               StageRow.worker, StageRow.error)
        .join(RunRow, (RunRow.site_id == StageRow.site_id) & (RunRow.run_id == StageRow.run_id))
        .where(StageRow.status == "failed", RunRow.status == "failed"))
    for s in failed:
        out.append(Condition(
            key("job_failed", s.site_id, s.run_id, s.stage_id), "job_failed", config.severity("job_failed"),
            f"stage {s.stage_id} of run {s.run_id} failed after {s.attempts} attempt(s): {s.error[:300]}",
            f"/runs/{s.site_id}/{s.run_id}", f"attempt {s.attempts}", s.site_id, s.tenant_id, s.run_id, s.stage_id,
            hosts.get((s.site_id, s.worker)) if s.worker else None))
    threshold = config.threshold("excessive_retries")
    if threshold is not None:
        retried = session.execute(
            select(StageRow.site_id, StageRow.run_id, StageRow.stage_id, StageRow.tenant_id, StageRow.attempts,
                   StageRow.status)
            .where(StageRow.attempts > threshold, StageRow.status.not_in(("done", "skipped", "cancelled"))))
        for r in retried:
            out.append(Condition(
                key("excessive_retries", r.site_id, r.run_id, r.stage_id), "excessive_retries",
                config.severity("excessive_retries"),
                f"stage {r.stage_id} of run {r.run_id} is on attempt {r.attempts} (threshold {threshold:g}), "
                f"now {r.status}", f"/runs/{r.site_id}/{r.run_id}", f"attempt {r.attempts}", r.site_id, r.tenant_id,
                r.run_id, r.stage_id))
    return out


def _blocked(session: Session, config: AlertConfig) -> list[Condition]:
    runs = list(session.execute(select(RunRow.site_id, RunRow.run_id, RunRow.tenant_id, RunRow.detail,
                                       RunRow.replicated_seq).where(RunRow.status == "blocked")))
    stages: dict[tuple[str, str], str] = {}
    if runs:
        for s in session.execute(select(StageRow.site_id, StageRow.run_id, StageRow.stage_id)
                                 .where(StageRow.status == "failed",
                                        StageRow.run_id.in_([r.run_id for r in runs]))):
            stages[(s.site_id, s.run_id)] = s.stage_id
    return [Condition(key("canon_blocked", r.site_id, r.run_id), "canon_blocked", config.severity("canon_blocked"),
                      f"run {r.run_id} blocked: {r.detail[:400]}", f"/runs/{r.site_id}/{r.run_id}", "blocked",
                      r.site_id, r.tenant_id, r.run_id, stages.get((r.site_id, r.run_id)))
            for r in runs]


def _hosts_and_sites(session: Session, config: AlertConfig, now: float
                     ) -> tuple[list[Condition], frozenset[str], str, frozenset[str]]:
    rows = list(session.execute(select(HostRow.site_id, HostRow.host, HostRow.last_report_at, HostRow.interval_s,
                                       HostRow.reported_state, HostRow.reasons, HostRow.disks)))
    sites = list(session.scalars(select(SiteRow)))
    verdicts, connections = judge(seen(rows), {s.site_id: s.last_push_at for s in sites}, now, config.site_timeout)
    out: list[Condition] = []
    disconnected = sorted(s.site_id for s in sites if connections[s.site_id].state == "disconnected")
    held: frozenset[str] = frozenset()
    because = ""
    if len(disconnected) >= 2 and 2 * len(disconnected) > len(sites):
        held = OBSERVER_TYPES
        because = (f"{len(disconnected)} of {len(sites)} sites disconnected at once: the centre's view is suspect, "
                   "so no host_down or site_disconnected is raised")
    for site_id in disconnected if not held else ():
        link = connections[site_id]
        out.append(Condition(key("site_disconnected", site_id), "site_disconnected",
                             config.severity("site_disconnected"), f"site {site_id} disconnected: {link.reason}", "/",
                             "disconnected", site_id))
    unknown = set()
    for r in rows:
        verdict = verdicts[(r.site_id, r.host)]
        if verdict.state == "disconnected":
            unknown.add(key("host_down", r.site_id, r.host))
        if verdict.state == "offline" and not held:
            out.append(Condition(key("host_down", r.site_id, r.host), "host_down", config.severity("host_down"),
                                 f"host {r.host} at site {r.site_id} is offline: {'; '.join(verdict.reasons)}",
                                 f"/hosts/{r.site_id}/{r.host}", "offline", r.site_id, host=r.host))
        fraction = config.threshold("disk_full")
        for disk in r.disks or ():
            total = disk.get("total_bytes") or 0
            used = (disk.get("used_bytes") or 0) / total if total else 0.0
            if used >= fraction if fraction is not None else bool(disk.get("over_high_water")):
                mount = str(disk.get("mount", ""))
                out.append(Condition(
                    key("disk_full", r.site_id, r.host, mount), "disk_full", config.severity("disk_full"),
                    f"volume {mount} of host {r.host} at site {r.site_id} is {used:.0%} full (over its high-water "
                    "mark)", f"/hosts/{r.site_id}/{r.host}", "over", r.site_id, host=r.host, stage=mount))
    lag_limit, backlog_limit = config.threshold("replication_lagging"), config.backlog()
    for s in sites:
        if connections[s.site_id].state != "connected":
            continue
        backlog = max(0, (s.site_head or 0) - (s.cursor or 0))
        lagging = lag_limit is not None and s.lag_s is not None and s.lag_s > lag_limit
        behind = backlog_limit is not None and backlog > backlog_limit
        if lagging or behind:
            out.append(Condition(key("replication_lagging", s.site_id), "replication_lagging",
                                 config.severity("replication_lagging"),
                                 f"site {s.site_id} replication lags {s.lag_s or 0:.0f} s with {backlog} events "
                                 "not yet applied", "/", "lagging", s.site_id))
    return out, held, because, frozenset(unknown)


def _providers(session: Session, config: AlertConfig, now: float) -> list[Condition]:
    threshold = config.threshold("provider_unavailable")
    if threshold is None:
        return []
    recent: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for c in session.execute(select(CostRow.site_id, CostRow.provider, CostRow.outcome, CostRow.tenant_id)
                             .where(CostRow.provider != "local", CostRow.committed_at >= now - PROVIDER_WINDOW_S)
                             .order_by(CostRow.committed_at)):
        recent[(c.site_id, c.provider)].append((c.outcome, c.tenant_id))
    out = []
    for (site_id, provider), outcomes in recent.items():
        last = outcomes[-int(threshold):]
        if len(last) >= threshold and all(outcome == "failed" for outcome, _ in last):
            out.append(Condition(key("provider_unavailable", site_id, provider), "provider_unavailable",
                                 config.severity("provider_unavailable"),
                                 f"provider {provider} failed its last {len(last)} calls at site {site_id}", "/",
                                 str(len(outcomes)), site_id, stage=provider))
    return out


def _budgets(session: Session, config: AlertConfig, now: float) -> list[Condition]:
    if not config.budgets:
        return []
    spent = {tenant: total for tenant, total in session.execute(
        select(CostRow.tenant_id, func.sum(CostRow.usd))
        .where(CostRow.committed_at >= now - BUDGET_WINDOW_S, CostRow.tenant_id.in_(list(config.budgets)))
        .group_by(CostRow.tenant_id))}
    return [Condition(key("budget_exceeded", tenant), "budget_exceeded", config.severity("budget_exceeded"),
                      f"tenant {tenant} spent {spent[tenant]:.2f} USD in 24 h, over its budget of {budget:.2f}",
                      "/", "over", tenant_id=tenant)
            for tenant, budget in config.budgets.items() if (spent.get(tenant) or 0.0) > budget]
