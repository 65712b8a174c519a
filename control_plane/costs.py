"""Cost: compute seconds and spend per run, project, site and day, against budgets where set.

A read model over the replicated cost events (:class:`~control_plane.tables.CostRow`, one per
attempt of a stage, inserted once), no transport. Every figure is summed over a window of
commit times (the site's clock when the attempt's cost was recorded), the last ``days`` days by
default, read from the per-run-per-UTC-day sums the ingest keeps, so a page costs the same with a
year of history as with a week and with one attempt per run as with a hundred.

Budgets: the fleet had no budget concept, so the centre reads a small optional file,
``DIR/budgets.json`` (``DIR`` is ``control serve --data-dir``)::

    {"run": {"usd": 0.5, "compute_s": 900}, "project": {"usd": 20}, "site": {"compute_s": 86400},
     "day": {"usd": 50}}

Each of ``run``, ``project``, ``site`` and ``day`` may set ``usd`` and/or ``compute_s``, a limit
for one row of that table over the window (``day``: per day). A row at 80 % of a limit is
``near``, at or over it ``over``. A malformed file is refused naming the file, field and value.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.errors import ControlInputError
from control_plane.fleet import Scope
from control_plane.tables import CostDayRow, CostRow, RunRow

BUDGETS_FILE = "budgets.json"
#: The window a cost page sums unless asked otherwise, and the longest it may ask for.
DEFAULT_DAYS = 7
MAX_DAYS = 366
#: Rows of the per-run and per-project tables (the costliest first).
TOP = 50
#: The fraction of a limit from which a row is shown as near it.
NEAR = 0.8
SCOPES = ("run", "project", "site", "day")
MEASURES = ("usd", "compute_s")


class BudgetError(ControlInputError):
    """Raised for a budgets file the centre cannot use; names the file, field, value and expectation."""


@dataclass(frozen=True)
class Budgets:
    """Limits by scope (``run``, ``project``, ``site``, ``day``) and measure (``usd``, ``compute_s``)."""

    limits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def limit(self, scope: str, measure: str) -> float | None:
        return self.limits.get(scope, {}).get(measure)


def load_budgets(data_dir: Path) -> Budgets:
    """``DIR/budgets.json``, or no budgets when there is no such file.

    Raises:
        BudgetError: the file is unreadable, not JSON, or a field is not a known scope/measure
            with a positive number.
    """
    path = data_dir / BUDGETS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Budgets()
    except OSError as exc:
        raise BudgetError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BudgetError(f"{path}: not JSON ({exc}); expected an object of budgets by scope") from None
    return parse_budgets(data, str(path))


def parse_budgets(data: Any, source: str) -> Budgets:
    """Budgets from their JSON form; ``source`` names where it came from in an error."""
    if not isinstance(data, dict):
        raise BudgetError(f"{source}: value {type(data).__name__}: expected an object of budgets by scope")
    limits: dict[str, dict[str, float]] = {}
    for scope, measures in data.items():
        if scope not in SCOPES:
            raise BudgetError(f"{source}: field {scope!r}: expected one of {', '.join(SCOPES)}")
        if not isinstance(measures, dict):
            raise BudgetError(f"{source}: field {scope!r}: value {measures!r}: expected an object such as "
                              '{"usd": 10}')
        for measure, value in measures.items():
            if measure not in MEASURES:
                raise BudgetError(f"{source}: field {scope}.{measure}: expected one of {', '.join(MEASURES)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise BudgetError(f"{source}: field {scope}.{measure}: value {value!r}: expected a positive number")
            limits.setdefault(scope, {})[measure] = float(value)
    return Budgets(limits)


class CostLine(BaseModel):
    """One row of a cost table: what it is, its sums, and how it stands against its budget."""

    key: str
    label: str
    site_id: str | None = None
    run_id: str | None = None
    attempts: int
    compute_s: float
    usd: float
    #: ``""`` (no budget, or under 80 %), ``near`` or ``over``; ``budget`` says which limit.
    standing: str
    budget: str


class CostReport(BaseModel):
    since: float
    until: float
    days: int
    total_compute_s: float
    total_usd: float
    attempts: int
    runs: list[CostLine]
    projects: list[CostLine]
    sites: list[CostLine]
    per_day: list[CostLine]
    budgets: dict[str, dict[str, float]]


def _standing(budgets: Budgets, scope: str, compute_s: float, usd: float) -> tuple[str, str]:
    worst, told = "", []
    for measure, value in (("usd", usd), ("compute_s", compute_s)):
        limit = budgets.limit(scope, measure)
        if limit is None:
            continue
        shown = f"${limit:,.2f}" if measure == "usd" else f"{limit:,.0f} s"
        told.append(shown)
        if value >= limit:
            worst = "over"
        elif value >= NEAR * limit and worst != "over":
            worst = "near"
    return worst, " / ".join(told)


def _line(budgets: Budgets, scope: str, key: str, label: str, attempts: int, compute_s: float | None, usd: float | None,
          **ids: str) -> CostLine:
    compute, spend = float(compute_s or 0.0), float(usd or 0.0)
    standing, budget = _standing(budgets, scope, compute, spend)
    return CostLine(key=key, label=label, attempts=attempts, compute_s=compute, usd=spend, standing=standing,
                    budget=budget, **ids)


def report(session: Session, now: float, days: int = DEFAULT_DAYS, scope: Scope = None,
           budgets: Budgets | None = None, site_id: str | None = None) -> CostReport:
    """The costs of the ``days`` UTC days up to and including ``now``'s, per run, project, site and day.

    Reads the cost days (:class:`~control_plane.tables.CostDayRow`, one row per run and UTC day,
    kept by the ingest) of the window, an index range on ``(day, tenant_id)``, summed in the
    database per run (the costliest only), project (joined to the runs), site and day: a few
    thousand rows whatever the number of attempts. Today counts whole (an attempt a site's clock
    dated after ``now`` is in it).

    Raises:
        ControlInputError: ``days`` is out of range.
    """
    if not 1 <= days <= MAX_DAYS:
        raise ControlInputError(f"days: value {days}: expected 1 to {MAX_DAYS}")
    budgets = budgets or Budgets()
    today = math.floor(now / 86_400)
    since = (today - days + 1) * 86_400.0  # whole UTC days, today included
    window = [CostDayRow.day >= today - days + 1, CostDayRow.day <= today]
    if scope is not None:
        window.append(CostDayRow.tenant_id.in_(list(scope)))
    if site_id is not None:
        window.append(CostDayRow.site_id == site_id)
    attempts, seconds, spend = (func.sum(CostDayRow.attempts), func.sum(CostDayRow.compute_s),
                                func.sum(CostDayRow.usd))

    def summed(*keys: Any, joined: bool = False, top: bool = False) -> Any:
        """The window's sums per ``keys``, in the database (a few thousand rows folded in C, not here)."""
        query = select(*keys, attempts, seconds, spend).where(*window).group_by(*keys)
        if joined:
            query = query.outerjoin(RunRow, (RunRow.site_id == CostDayRow.site_id)
                                    & (RunRow.run_id == CostDayRow.run_id))
        if top:
            query = query.order_by(spend.desc(), seconds.desc(), *keys).limit(TOP)
        return session.execute(query)

    tables: dict[str, dict[tuple[str, ...], list[float]]] = {
        "run": {(site, run): [a, c, u] for site, run, a, c, u in summed(CostDayRow.site_id, CostDayRow.run_id,
                                                                        top=True)},
        "project": {(tenant, _project(path)): [a, c, u] for tenant, path, a, c, u in summed(
            CostDayRow.tenant_id, RunRow.project_path, joined=True)},
        "site": {(site,): [a, c, u] for site, a, c, u in summed(CostDayRow.site_id)},
        "day": {(_date(float(number) * 86_400),): [a, c, u] for number, a, c, u in summed(CostDayRow.day)},
    }

    def lines(scope_name: str, costliest: bool) -> list[CostLine]:
        made = []
        items = list(tables[scope_name].items())
        if costliest:  # the top rows chosen before any line is built: a window has thousands of runs
            items = sorted(items, key=lambda item: (-item[1][2], -item[1][1], "/".join(item[0])))[:TOP]
        for key, (n, compute, usd) in items:
            if scope_name == "run":
                made.append(_line(budgets, "run", "/".join(key), key[1], int(n), compute, usd, site_id=key[0],
                                  run_id=key[1]))
            elif scope_name == "project":
                made.append(_line(budgets, "project", "/".join(key), f"{key[1]} ({key[0]})", int(n), compute, usd))
            else:
                made.append(_line(budgets, scope_name, key[0], key[0], int(n), compute, usd))
        if costliest:
            return made
        return sorted(made, key=lambda line: line.key, reverse=scope_name == "day")

    sites = lines("site", False)
    return CostReport(since=since, until=now, days=days, total_compute_s=sum(s.compute_s for s in sites),
                      total_usd=sum(s.usd for s in sites), attempts=sum(s.attempts for s in sites),
                      runs=lines("run", True), projects=lines("project", True), sites=sites,
                      per_day=lines("day", False), budgets={k: dict(v) for k, v in budgets.limits.items()})


def run_cost(session: Session, site_id: str, run_id: str, budgets: Budgets | None = None) -> CostLine:
    """One run's whole cost (every attempt, whenever committed), against the per-run budget."""
    n, seconds, spend = session.execute(
        select(func.count(), func.sum(CostRow.compute_seconds), func.sum(CostRow.usd))
        .where(CostRow.site_id == site_id, CostRow.run_id == run_id)).one()
    return _line(budgets or Budgets(), "run", f"{site_id}/{run_id}", run_id, n, seconds, spend, site_id=site_id,
                 run_id=run_id)


def _project(path: str | None) -> str:
    """A run's project as the cost tables name it: a run of probe stages has none, an unreplicated run is unknown."""
    if path is None:
        return "(run not replicated yet)"
    return path or "(no project: probe stages)"


def _date(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()
