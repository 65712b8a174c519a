"""The fleet page's fleet-wide figures, computed at most once per tick and shared by every viewer of a scope.

Why: the fleet page's overview (every host judged, every site's link, the runs counted by status,
the jobs waiting per site and queue) reads the whole fleet. With 100,000 runs and 1,000 hosts that
was ~0.5 s per request on a loaded machine, mostly the waiting-jobs count (tens of thousands of live
stages looked up row by row) and judging every host; an incident that brings everyone to the fleet
page would multiply it. These figures already update live once per tick (:data:`~live.TICK_S`), so a
page may show a value up to a tick old as well: a value younger than ``fresh_s`` is served as is; an
older one (younger than ``stale_s``) is served while one background thread computes the next; one
older than that (nobody looked for a while) is computed before answering, so a page never shows a
stale fleet after a quiet spell. The verdicts are :func:`control_plane.health.judge`'s, unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.dashboard.live import TICK_S
from control_plane.dashboard.load import queue_loads
from control_plane.fleet import Fleet, Liveness

#: Served as is while younger than this (seconds): the live updates' own pace.
FRESH_S = TICK_S
#: Past this age a value is recomputed before answering rather than in the background.
STALE_S = 5 * TICK_S
#: Scopes kept at most (one per distinct tenant set that looked); the least recently computed goes first.
MAX_SCOPES = 256
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    at: float
    value: dict[str, Any]


def overview(fleet: Fleet, scope: list[str] | None) -> dict[str, Any]:
    """What the fleet and queues pages show of the whole fleet: summary, sites, each queue's load, every
    unhealthy host."""
    unhealthy = sorted(((key, verdict) for key, verdict in fleet.host_states().items()
                        if verdict.state not in ("healthy", "disconnected")), key=lambda item: item[0])
    return {"summary": fleet.summary(scope), "sites": fleet.sites(scope),
            "loads": queue_loads(fleet.session, fleet.now), "unhealthy": unhealthy}


class Glance:
    """:func:`overview` per tenant scope, shared by the requests of one process (see the module's docstring)."""

    def __init__(self, engine: Engine, liveness: Liveness, *, fresh_s: float = FRESH_S, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.liveness, self.fresh_s, self.stale_s, self.clock = engine, liveness, fresh_s, stale_s, clock
        self._entries: dict[Hashable, _Entry] = {}
        self._refreshing: set[Hashable] = set()
        self._lock = threading.Lock()
        #: Overviews computed (a test's and a benchmark's view of how often the fleet was read).
        self.computed = 0

    def get(self, scope: list[str] | None) -> dict[str, Any]:
        key = None if scope is None else tuple(sorted(scope))
        with self._lock:
            entry = self._entries.get(key)
            age = None if entry is None else self.clock() - entry.at
            if entry is not None and age is not None and age < self.stale_s:
                if age >= self.fresh_s and key not in self._refreshing:
                    self._refreshing.add(key)
                    threading.Thread(target=self._refresh, args=(key,), name="fleet-glance", daemon=True).start()
                return entry.value
        return self._compute(key)

    def _compute(self, key: Hashable) -> dict[str, Any]:
        started = self.clock()
        with Session(self.engine) as session:
            value = overview(Fleet(session, self.liveness), None if key is None else list(key))  # type: ignore[call-overload]
        with self._lock:
            self.computed += 1
            self._entries[key] = _Entry(started, value)
            if len(self._entries) > MAX_SCOPES:
                del self._entries[min(self._entries, key=lambda k: self._entries[k].at)]
        return value

    def _refresh(self, key: Hashable) -> None:
        """The background recomputation; a failure leaves the old value, which ages into a synchronous one."""
        try:
            self._compute(key)
        except Exception:
            log.exception("dashboard: refreshing the fleet overview failed")
        finally:
            with self._lock:
                self._refreshing.discard(key)
