"""Host health: a cheap psutil sample, thresholds, and a state machine with hysteresis.

One agent samples its host about once a second. A sample is a :class:`HostHealth` message with
the raw figures and one ``reasons`` line per threshold it breaches; :class:`HostStateMachine`
turns the stream of samples into ``healthy`` / ``degraded`` / ``offline`` so that one noisy
sample does not flap the state (Consul's ``failures_before_critical`` /
``success_before_passing``). :class:`HealthMonitor` puts the two together with what the site
knows about this host's workers and the site's queues.

The state, in samples (one a second by default):

- ``healthy`` → ``degraded`` after ``degrade_after`` consecutive bad samples. A sample is bad
  when it breaches a threshold or the site cannot be reached.
- ``degraded`` → ``healthy`` after ``recover_after`` consecutive good samples.
- any → ``offline`` after ``offline_after`` consecutive samples in which this host cannot work
  for its site: the site (its ``site.json``, Redis and database) cannot be read, or none of the
  workers this agent supervises has a live heartbeat at the site. Both mean no job can reach
  this host, which is what ``offline`` tells the scheduler. A host whose agent supervises no
  worker is judged on reachability alone.
- ``offline`` → ``healthy`` (or ``degraded`` if any of those samples breached a threshold)
  after ``recover_after`` consecutive reachable samples.

A fresh machine starts ``healthy``: starting ``degraded`` would stop a host's work for
``recover_after`` samples at every agent restart, and a host that is really in trouble is
caught ``degrade_after`` samples later.

``offline_after`` defaults to 10 samples because the site itself only notices a dead worker when
its heartbeat expires (10 s by default, ``site serve --heartbeat-ttl``); a shorter window
would judge on data that is not yet there, and a site restart (a few seconds) should not take
every host offline.

Cost: :func:`sample_host` makes five cheap calls (``getloadavg``, ``/proc/meminfo``, one
``statvfs`` per volume, the hwmon temperatures, a cached cpu count) and never iterates over
processes; about 0.1 ms of CPU on a 2-core machine. The site reads of :class:`HealthMonitor`
cost more, so the queue figures (site-wide, slow-moving) are read every ``queues_every`` samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ops_agent.errors import AgentInputError
from ops_agent.site_link import SITE_ERRORS, SiteLink, short_error
from protos import telemetry_pb2 as pb

if TYPE_CHECKING:
    from ops_agent.supervisor import Supervisor

log = logging.getLogger(__name__)

HEALTHY = pb.HOST_STATE_HEALTHY
DEGRADED = pb.HOST_STATE_DEGRADED
OFFLINE = pb.HOST_STATE_OFFLINE

#: A supervised worker this young that the site has not heard from yet is starting, not dead.
STARTUP_GRACE_S = 15.0


class InvalidThresholds(AgentInputError):
    """Raised when a threshold is out of its range; the message names the field, value and range."""


@dataclass(frozen=True)
class Thresholds:
    """When a host counts as degraded or offline, and how many samples it takes to change state.

    Parameters:
        load_per_cpu_degraded: 1-minute load average divided by the cpu count at or above which
            a sample is bad (2.0: twice as many runnable tasks as cores).
        memory_degraded: fraction of memory in use (total minus available) at or above which a
            sample is bad.
        disk_high_water: fraction of a volume in use (as ``df`` shows it) at or above which a
            sample is bad.
        temperature_degraded_c: any sensor at or above this temperature makes a sample bad.
        degrade_after: consecutive bad samples before ``healthy`` becomes ``degraded``.
        recover_after: consecutive good samples before ``degraded`` (or ``offline``) recovers.
        offline_after: consecutive samples in which the host cannot work for its site before
            it is ``offline``.
    """

    load_per_cpu_degraded: float = 2.0
    memory_degraded: float = 0.9
    disk_high_water: float = 0.9
    temperature_degraded_c: float = 90.0
    degrade_after: int = 3
    recover_after: int = 5
    offline_after: int = 10

    def __post_init__(self) -> None:
        for name in ("load_per_cpu_degraded", "memory_degraded", "disk_high_water", "temperature_degraded_c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidThresholds(f"thresholds.{name}: value {value!r}: expected a number")
        for name in ("memory_degraded", "disk_high_water"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise InvalidThresholds(f"thresholds.{name}: value {getattr(self, name)!r}: expected a fraction "
                                        "above 0 and at most 1")
        if self.load_per_cpu_degraded <= 0:
            raise InvalidThresholds(f"thresholds.load_per_cpu_degraded: value {self.load_per_cpu_degraded!r}: "
                                    "expected a number above 0")
        for name in ("degrade_after", "recover_after", "offline_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidThresholds(f"thresholds.{name}: value {value!r}: expected a whole number of samples ≥ 1")


def default_volumes(data_dir: Path) -> list[Path]:
    """The volumes an agent watches unless told otherwise: the site's data folder and ``/``."""
    return [Path(data_dir), Path("/")]


_CPU_COUNT: int | None = None


def _cpu_count() -> int:
    global _CPU_COUNT
    if _CPU_COUNT is None:
        _CPU_COUNT = psutil.cpu_count() or 1
    return _CPU_COUNT


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def sample_host(host: str, site: str, volumes: Sequence[Path], thresholds: Thresholds) -> pb.HostHealth:
    """Sample this host's load, memory, disks and temperatures; one ``reasons`` line per breach.

    The state is left ``HOST_STATE_UNSPECIFIED``: judging it needs the samples before this one
    (:class:`HostStateMachine`). A volume that cannot be read is a breach of its own.
    """
    health = pb.HostHealth(host=host, site_id=site, sampled_at=time.time(), cpu_count=_cpu_count())
    reasons = health.reasons

    load_1m, load_5m, _ = psutil.getloadavg()
    health.load_1m, health.load_5m = load_1m, load_5m
    per_cpu = load_1m / health.cpu_count
    if per_cpu >= thresholds.load_per_cpu_degraded:
        reasons.append(f"load 1m {load_1m:.2f} = {per_cpu:.2f} per cpu ≥ {thresholds.load_per_cpu_degraded:g} "
                       f"({health.cpu_count} cpus)")

    memory = psutil.virtual_memory()
    used = memory.total - memory.available
    health.memory_used_bytes, health.memory_total_bytes = used, memory.total
    if memory.total and used / memory.total >= thresholds.memory_degraded:
        reasons.append(f"memory {_pct(used / memory.total)} used ≥ {_pct(thresholds.memory_degraded)}")

    for volume in dict.fromkeys(Path(v) for v in volumes):
        try:
            usage = psutil.disk_usage(str(volume))
        except OSError as exc:
            reasons.append(f"disk {volume}: cannot read ({exc.strerror or exc})")
            continue
        # As df shows it: blocks reserved for root are not counted as free.
        fraction = usage.used / (usage.used + usage.free) if usage.used + usage.free else 0.0
        over = fraction >= thresholds.disk_high_water
        health.disks.append(pb.DiskUsage(mount=str(volume), used_bytes=usage.used, total_bytes=usage.total,
                                         high_water=thresholds.disk_high_water, over_high_water=over))
        if over:
            reasons.append(f"disk {volume} {_pct(fraction)} ≥ {_pct(thresholds.disk_high_water)}")

    for sensor, celsius in _temperatures():
        health.temperatures.append(pb.TemperatureReading(sensor=sensor, celsius=celsius))
        if celsius >= thresholds.temperature_degraded_c:
            reasons.append(f"temperature {sensor} {celsius:.1f} °C ≥ {thresholds.temperature_degraded_c:g} °C")
    return health


def _temperatures() -> list[tuple[str, float]]:
    """``(chip/label, °C)`` per sensor; empty where psutil cannot read any (VMs, containers, macOS)."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return []
    try:
        chips = reader()
    except (OSError, RuntimeError):
        return []
    return [(f"{chip}/{entry.label or index}", float(entry.current))
            for chip, entries in sorted(chips.items()) for index, entry in enumerate(entries)
            if entry.current is not None]


class HostStateMachine:
    """Turns per-sample findings into a host state with hysteresis (see the module docstring).

    Pure: feed it samples with :meth:`observe`; it reads no clock and no system state.
    """

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.state: pb.HostState = HEALTHY
        self._bad = 0          # consecutive samples with a breach or no reachable site
        self._good = 0         # consecutive reachable samples without a breach
        self._unreachable = 0  # consecutive samples in which the host could not work for its site
        self._reachable = 0    # consecutive samples in which it could

    def observe(self, breaches: Sequence[str], reachable: bool) -> pb.HostState:
        """Take one sample's breaches and whether the host could work for its site; return the state."""
        good = reachable and not breaches
        self._good = self._good + 1 if good else 0
        self._bad = 0 if good else self._bad + 1
        self._reachable = self._reachable + 1 if reachable else 0
        self._unreachable = 0 if reachable else self._unreachable + 1
        t = self.thresholds
        if self._unreachable >= t.offline_after:
            self.state = OFFLINE
        elif self.state == OFFLINE:
            if self._reachable >= t.recover_after:
                self.state = HEALTHY if self._good >= t.recover_after else DEGRADED
        elif self.state == HEALTHY:
            if self._bad >= t.degrade_after:
                self.state = DEGRADED
        elif self._good >= t.recover_after:
            self.state = HEALTHY
        return self.state

    def pending(self) -> str | None:
        """Why the state may be about to change, as a reason line; None when nothing is pending."""
        t = self.thresholds
        if self.state == HEALTHY and self._bad:
            return f"{self._bad} of {t.degrade_after} bad samples before degraded"
        if self.state == DEGRADED and self._good:
            return f"recovering: {self._good} of {t.recover_after} good samples"
        if self.state != OFFLINE and self._unreachable:
            return f"{self._unreachable} of {t.offline_after} unreachable samples before offline"
        if self.state == OFFLINE and self._reachable:
            return f"recovering: {self._reachable} of {t.recover_after} reachable samples"
        return None


# -- what the site knows --------------------------------------------------------------------


def worker_statuses(rows: Iterable[Mapping[str, Any]], host: str, site: str,
                    restarts: Mapping[str, int] | None = None) -> list[pb.WorkerStatus]:
    """This host's workers from ``SiteClient.workers()`` rows, sorted by name.

    Parameters:
        rows: the site's worker rows (every host's; others are dropped).
        host: this agent's host id, as its workers report it with ``--host``.
        site: the site id, used when a row has none.
        restarts: the workers this agent supervises, name → restarts so far. A supervised
            worker the site has not heard from is listed as ``offline`` with pid 0.
    """
    restarts = restarts or {}
    found: dict[str, pb.WorkerStatus] = {}
    for row in rows:
        if row.get("host") != host:
            continue
        name = str(row["name"])
        found[name] = pb.WorkerStatus(
            name=name, site_id=str(row.get("site_id") or site), host=host, pid=int(row.get("pid") or 0),
            status=str(row.get("status") or ""), queues=[str(q) for q in row.get("queues") or []],
            current_job=str(row.get("current_job") or ""), since=float(row.get("since") or 0.0),
            supervised=name in restarts, restarts=int(restarts.get(name, 0)))
    for name, count in restarts.items():
        if name not in found:
            found[name] = pb.WorkerStatus(name=name, site_id=site, host=host, status="offline", supervised=True,
                                          restarts=int(count))
    return [found[name] for name in sorted(found)]


def queue_stats(rows: Iterable[Mapping[str, Any]], site: str) -> list[pb.QueueStats]:
    """The site's queues from ``SiteClient.queues()`` rows.

    ``depth`` counts every job of the queue that no worker has started: the scheduler's
    ``waiting`` stages plus the messages in Redis. The scheduler keeps at most a few messages in
    Redis at a time, so the Redis depth alone would hide the backlog. ``drain_eta_seconds`` is
    -1 when the site cannot estimate it.
    """
    stats = []
    for row in rows:
        eta = row.get("drain_eta_s")
        stats.append(pb.QueueStats(
            name=str(row["queue"]), site_id=site, paused=bool(row.get("paused")),
            depth=int(row.get("depth") or 0) + int(row.get("waiting") or 0), in_flight=int(row.get("in_flight") or 0),
            delayed=int(row.get("delayed") or 0), dead=int(row.get("dead") or 0),
            throughput_per_hour=float(row.get("throughput_per_hour") or 0.0),
            drain_eta_seconds=-1.0 if eta is None else float(eta)))
    return stats


def worker_findings(workers: Sequence[pb.WorkerStatus], starting: Iterable[str] = ()) -> tuple[list[str], str | None]:
    """Judge the supervised workers: ``(breaches, offline_reason)``.

    A supervised worker without a live heartbeat (status ``offline``) is a breach, unless it
    is still ``starting``. When every supervised worker is dead the host cannot work for its
    site: the second item says so, and the host counts as unreachable.
    """
    starting = set(starting)
    supervised = [w for w in workers if w.supervised]
    dead = [w.name for w in supervised if w.status == "offline" and w.name not in starting]
    if supervised and len(dead) == len(supervised):
        return [], f"no heartbeat from any supervised worker ({', '.join(dead)})"
    return [f"worker {name}: supervised but no heartbeat at the site" for name in dead], None


class HealthMonitor:
    """One per agent: sample the host, read the site, judge the state, return a full HostHealth.

    Call :meth:`sample` once per interval from the agent's loop (not thread-safe; one caller).
    The site is read through a :class:`~ops_agent.site_link.SiteLink` (the agent's own, or one
    made here from ``data_dir``), which finds the site again after any failure.

    Parameters:
        host, site: this agent's host id and site id.
        data_dir: the site's data folder; None to report the host alone (always reachable).
        link: the agent's link to the site; default one of this monitor's own for ``data_dir``.
        volumes: volumes to watch; default the data folder and ``/``.
        thresholds: see :class:`Thresholds`.
        supervisor: this host's :class:`~ops_agent.supervisor.Supervisor`, if it runs workers.
        queues_every: read the site's queue figures every this many samples.
    """

    def __init__(self, host: str, site: str, data_dir: Path | None, *, link: SiteLink | None = None,
                 volumes: Sequence[Path] | None = None,
                 thresholds: Thresholds | None = None, supervisor: Supervisor | None = None,
                 queues_every: int = 5) -> None:
        self.host, self.site, self.data_dir = host, site, data_dir
        self.volumes = list(volumes) if volumes is not None else (
            default_volumes(data_dir) if data_dir is not None else [Path("/")])
        self.thresholds = thresholds or Thresholds()
        self.machine = HostStateMachine(self.thresholds)
        self.supervisor = supervisor
        self.queues_every = max(1, queues_every)
        self._own_link = link is None and data_dir is not None
        self.link = link if link is not None else (SiteLink(site, data_dir) if data_dir is not None else None)
        self._queues: list[pb.QueueStats] = []
        self._count = 0

    def close(self) -> None:
        if self._own_link and self.link is not None:
            self.link.close()

    def sample(self, problems: Sequence[str] = ()) -> pb.HostHealth:
        """One judged sample: host figures, this host's workers, the site's queues, state and reasons.

        ``problems`` are the agent's own breaches (an audit log that cannot be written), judged like the rest.
        """
        health = sample_host(self.host, self.site, self.volumes, self.thresholds)
        health.reasons.extend(problems)
        breaches = list(health.reasons)
        processes = self.supervisor.status() if self.supervisor is not None else []
        restarts = {p.name: p.restarts for p in processes}
        starting = [p.name for p in processes if p.running and p.uptime < STARTUP_GRACE_S]
        offline_reason: str | None = None
        rows: list[dict[str, Any]] | None = None
        if self.link is not None:
            try:
                found = self.link.call(lambda site: site.workers())
                if not self._queues or self._count % self.queues_every == 0:
                    self._queues = queue_stats(self.link.call(lambda site: site.queues()), self.site)
                rows = found
            except SITE_ERRORS as exc:
                self._queues = []
                offline_reason = f"site {self.site} unreachable: {short_error(exc)}"
        self._count += 1
        workers = worker_statuses(rows or [], self.host, self.site, restarts)
        if rows is not None:
            health.queues.extend(self._queues)
            worker_breaches, offline_reason = worker_findings(workers, starting)
            breaches += worker_breaches
            health.reasons.extend(worker_breaches)
        health.workers.extend(workers)
        if offline_reason is not None:
            health.reasons.append(offline_reason)
        health.state = self.machine.observe(breaches, reachable=offline_reason is None)
        pending = self.machine.pending()
        if pending is not None:
            health.reasons.append(pending)
        return health
