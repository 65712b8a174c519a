"""Host telemetry at the centre: each agent's latest report, a bounded history, and host and site liveness.

:class:`Telemetry` records reports (one transaction each: the host's latest row, one history
sample, and now and then a trim of that host's history to :data:`HISTORY_S`).

Liveness is derived when read, from report times alone (:func:`judge`), so any number of
centres on one database agree and nothing has to run on a timer:

* a host that reports is in the state its agent gives (``healthy``, ``degraded`` with its
  reasons, or ``offline`` by its own word);
* a host silent for :data:`MISSED_INTERVALS` of its intervals is ``offline``, unless the
  observer is suspect: when most of its site's hosts, or most of the fleet's, fell silent within
  about one interval of it (:data:`TOGETHER_INTERVALS`, :data:`MIN_GROUP` hosts at least), or
  its site is not heard from at all
  (no push, no report within the site timeout), the host is ``disconnected`` and its site too.
  ``disconnected`` is not ``offline``: nothing is cancelled or requeued because of it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from control_plane.errors import ControlError
from control_plane.tables import HostRow, HostSampleRow

#: Seconds between two reports of an agent unless it says otherwise.
DEFAULT_INTERVAL_S = 5.0
#: Reports missed before a silent host is offline.
MISSED_INTERVALS = 3
#: Hosts that must fall silent together before the centre suspects itself rather than them.
MIN_GROUP = 2
#: "Together": last heard within this many intervals of each other. Hosts cut off at one instant
#: last reported up to one interval apart (each on its own phase), plus delivery jitter; a host
#: still reporting is at least two intervals clear of one just judged silent (three missed).
TOGETHER_INTERVALS = 1.5
#: Seconds of history kept per host (for graphs); older samples are trimmed.
HISTORY_S = 3600.0
#: Seconds between two trims of one host's history.
TRIM_EVERY_S = 60.0
HOST_STATES = ("healthy", "degraded", "offline")


class ReportRejected(ControlError):
    """Raised when a host report is malformed; the message names the field, value and expectation."""


@dataclass(frozen=True)
class Report:
    """One agent's health sample as the centre keeps it (the gRPC servicer builds it from ``HostHealth``)."""

    site_id: str
    host: str
    state: str
    agent_address: str = ""
    agent_tls: bool = False
    interval_s: float = 0.0
    reasons: tuple[str, ...] = ()
    sampled_at: float = 0.0
    load_1m: float = 0.0
    load_5m: float = 0.0
    cpu_count: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    disks: tuple[dict[str, Any], ...] = ()
    temperatures: tuple[dict[str, Any], ...] = ()
    workers: tuple[dict[str, Any], ...] = ()
    trusted_key_ids: tuple[str, ...] = ()
    trust_bundle_version: int = 0
    trust_problem: str = ""

    def check(self) -> None:
        for name in ("site_id", "host"):
            if not getattr(self, name) or len(getattr(self, name)) > 64 + 64 * (name == "host"):
                raise ReportRejected(f"{name}: value {getattr(self, name)!r}: expected a non-empty id")
        if self.state not in HOST_STATES:
            raise ReportRejected(f"state: value {self.state!r}: expected one of {', '.join(HOST_STATES)}")
        host, sep, port = self.agent_address.rpartition(":")
        if self.agent_address and (not sep or not host or not port.isdigit() or not 0 < int(port) < 65536):
            raise ReportRejected(f"agent_address: value {self.agent_address[:300]!r}: expected HOST:PORT, where the "
                                 "agent serves OpsAgent")
        if not 0 <= self.interval_s <= 3600:
            raise ReportRejected(f"interval_seconds: value {self.interval_s!r}: expected 0 to 3600 seconds")


class Telemetry:
    """Records host reports; knows no transport.

    Its statements are built once and executed with parameters on a Core connection: a report is
    small and frequent (2,000/s for 10,000 hosts), and building ORM statements per report cost
    more than the database did.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time,
                 default_interval_s: float = DEFAULT_INTERVAL_S, history_s: float = HISTORY_S) -> None:
        self.engine, self.clock = engine, clock
        self.default_interval_s, self.history_s = default_interval_s, history_s
        hosts, samples = HostRow.__table__, HostSampleRow.__table__
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        upsert = insert(hosts)
        kept = ("site_id", "host", "first_seen_at", "pruned_at")
        self._upsert = upsert.on_conflict_do_update(
            index_elements=["site_id", "host"],
            set_={c.name: upsert.excluded[c.name] for c in hosts.columns if c.name not in kept})
        self._sample = samples.insert()
        this = (hosts.c.site_id == bindparam("s")) & (hosts.c.host == bindparam("h"))
        self._due = (update(hosts).where(this, hosts.c.pruned_at < bindparam("before"))
                     .values(pruned_at=bindparam("now")))
        self._trim = delete(samples).where(samples.c.site_id == bindparam("s"), samples.c.host == bindparam("h"),
                                           samples.c.received_at < bindparam("before"))

    def record(self, report: Report) -> float:
        """Keep ``report`` as its host's latest and as a history sample; returns the centre's receive time."""
        report.check()
        now = self.clock()
        values = {
            "site_id": report.site_id, "host": report.host, "agent_address": report.agent_address,
            "agent_tls": report.agent_tls, "interval_s": report.interval_s or self.default_interval_s,
            "reported_state": report.state, "reasons": list(report.reasons), "first_seen_at": now,
            "last_report_at": now, "sampled_at": report.sampled_at, "load_1m": report.load_1m,
            "load_5m": report.load_5m, "cpu_count": report.cpu_count,
            "memory_used_bytes": report.memory_used_bytes, "memory_total_bytes": report.memory_total_bytes,
            "disks": list(report.disks), "temperatures": list(report.temperatures), "workers": list(report.workers),
            "trusted_key_ids": list(report.trusted_key_ids), "trust_bundle_version": report.trust_bundle_version,
            "trust_problem": report.trust_problem, "pruned_at": now,
        }
        fullest = max((d.get("used_bytes", 0) / d["total_bytes"] for d in report.disks if d.get("total_bytes")),
                      default=0.0)
        sample = {"site_id": report.site_id, "host": report.host, "received_at": now, "state": report.state,
                  "load_1m": report.load_1m, "memory_used_bytes": report.memory_used_bytes,
                  "memory_total_bytes": report.memory_total_bytes, "disk_used_fraction": fullest,
                  "workers_busy": sum(1 for w in report.workers if w.get("status") == "active")}
        key = {"s": report.site_id, "h": report.host}
        with self.engine.begin() as connection:
            connection.execute(self._upsert, values)
            connection.execute(self._sample, sample)
            if connection.execute(self._due, {**key, "before": now - TRIM_EVERY_S, "now": now}).rowcount:
                connection.execute(self._trim, {**key, "before": now - self.history_s})
        return now


# -- liveness, derived on read ------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What liveness needs of a host: who, when last heard, how often it reports, and its own verdict."""

    site_id: str
    host: str
    last_report_at: float
    interval_s: float
    reported_state: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    state: str  # healthy | degraded | offline | disconnected
    reasons: tuple[str, ...]
    silent_for_s: float


@dataclass(frozen=True)
class SiteConnection:
    state: str  # connected | disconnected
    reason: str
    heard_at: float | None


@dataclass
class _Scope:
    """Report times of a set of hosts, sorted, to count who fell silent near a given time."""

    times: list[float] = field(default_factory=list)

    def between(self, low: float, high: float) -> int:
        return bisect.bisect_right(self.times, high) - bisect.bisect_left(self.times, low)

    def since(self, low: float) -> int:
        return len(self.times) - bisect.bisect_left(self.times, low)


def _mass_silence(scope: _Scope, last: float, interval: float) -> bool:
    """Did most of the hosts still reporting at ``last`` fall silent together with it?"""
    window = TOGETHER_INTERVALS * interval
    together = scope.between(last - window, last + window)
    return together >= MIN_GROUP and 2 * together > scope.since(last - window)


def judge(hosts: Sequence[Seen], heard: dict[str, float | None], now: float,
          site_timeout_s: float) -> tuple[dict[tuple[str, str], Verdict], dict[str, SiteConnection]]:
    """Every host's state and every site's connection at ``now``.

    Parameters:
        hosts: every host of the fleet (the partition guard counts the whole fleet).
        heard: per site, when the centre last heard it (its last push or host report), None if never.
        site_timeout_s: a site not heard from for this long is disconnected.
    """
    fleet = _Scope(sorted(h.last_report_at for h in hosts))
    by_site: dict[str, _Scope] = {}
    for h in hosts:
        by_site.setdefault(h.site_id, _Scope()).times.append(h.last_report_at)
    for scope in by_site.values():
        scope.times.sort()
    sites: dict[str, SiteConnection] = {}
    for site_id in set(heard) | set(by_site):
        at = max((t for t in (heard.get(site_id), by_site[site_id].times[-1] if site_id in by_site else None)
                  if t is not None), default=None)
        if at is None:
            sites[site_id] = SiteConnection("disconnected", "never heard from", None)
        elif now - at > site_timeout_s:
            sites[site_id] = SiteConnection("disconnected", f"not heard from for {now - at:.0f} s (no push, no host "
                                            f"report; timeout {site_timeout_s:g} s)", at)
        else:
            sites[site_id] = SiteConnection("connected", "", at)
    # Judged before any host is: a site disconnected below for its hosts' silence must not make
    # the verdict of another of its hosts depend on the order they are looked at in.
    unheard = {site_id for site_id, link in sites.items() if link.state == "disconnected"}
    verdicts: dict[tuple[str, str], Verdict] = {}
    for h in hosts:
        silent = max(0.0, now - h.last_report_at)
        if silent <= MISSED_INTERVALS * h.interval_s:
            verdicts[(h.site_id, h.host)] = Verdict(h.reported_state, h.reasons, silent)
            continue
        silence = f"no report for {silent:.0f} s ({MISSED_INTERVALS} intervals of {h.interval_s:g} s missed)"
        site = sites[h.site_id]
        suspect = ("its site is not heard from either" if h.site_id in unheard
                   else f"most hosts of site {h.site_id} fell silent at once"
                   if _mass_silence(by_site[h.site_id], h.last_report_at, h.interval_s)
                   else "most hosts of the fleet fell silent at once"
                   if _mass_silence(fleet, h.last_report_at, h.interval_s) else None)
        if suspect is None:
            verdicts[(h.site_id, h.host)] = Verdict("offline", (silence,), silent)
            continue
        verdicts[(h.site_id, h.host)] = Verdict("disconnected", (f"{silence}; {suspect}: the centre's view is "
                                                                 "suspect, so the host is not marked offline",), silent)
        if site.state == "connected":
            sites[h.site_id] = SiteConnection("disconnected", f"{suspect} (observer suspect)", site.heard_at)
    return verdicts, sites


def seen(rows: Iterable[Any]) -> list[Seen]:
    """Liveness's view of host rows (ORM rows or Core rows with the same column names)."""
    return [Seen(r.site_id, r.host, r.last_report_at, r.interval_s, r.reported_state, tuple(r.reasons))
            for r in rows]
