"""Rejections counted per peer and reason per interval, so a flood of bad requests cannot fill the audit volume.

Every rejected request used to be one fsynced audit line: one local client wrote about 1.8 GB an
hour (issue 8). Now the first rejection of a (peer, reason) in an interval is written in full and
the rest of that interval are counted; when the interval ends, one summary line carries the count.
Nothing goes unrecorded, and the audit grows by at most two lines per peer and reason per interval.
How many (peer, reason) pairs are tracked at once is capped too: past the cap, new peers share one
``other peers`` label, so an attacker cycling addresses cannot grow the table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds over which one (peer, reason) gets a single full audit line.
DEFAULT_INTERVAL_S = 60.0
#: How many (peer, reason) windows are open at once before new peers are pooled.
MAX_WINDOWS = 1024
#: The peer label of the pool past :data:`MAX_WINDOWS`.
OTHER_PEERS = "other peers"


@dataclass(frozen=True)
class Summary:
    """The rejections of one (peer, reason) window that were counted, not written one by one."""

    peer: str
    reason: str
    count: int
    started: float  # unix seconds of the window's first rejection
    seconds: float

    @property
    def message(self) -> str:
        return (f"{self.count} more rejection(s) {self.reason or 'of the caller'} from {self.peer} within "
                f"{self.seconds:g} s of the first (written in full), counted here rather than line by line")


class RejectionWindows:
    """Decides which rejections are written in full and which are counted; thread-safe.

    Parameters:
        interval: seconds a window lasts from its first rejection.
        clock: unix seconds now (also the window's start as written in a summary).
        max_windows: cap on open windows; see :data:`MAX_WINDOWS`.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.time,
                 max_windows: int = MAX_WINDOWS) -> None:
        self.interval, self._clock, self._max = interval, clock, max_windows
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], list[float]] = {}  # (peer, reason) -> [started, count]

    def admit(self, peer: str, reason: str) -> tuple[bool, list[Summary]]:
        """Whether this rejection is written in full, and the summaries of windows that have ended meanwhile."""
        with self._lock:
            ended = self._take_ended(self._clock())
            key = (peer, reason)
            if key not in self._open and len(self._open) >= self._max:
                key = (OTHER_PEERS, reason)
            window = self._open.get(key)
            if window is None:
                self._open[key] = [self._clock(), 0]
                return True, ended
            window[1] += 1
            return False, ended

    def due(self) -> list[Summary]:
        """The summaries of every window that has ended (those that counted nothing are just closed)."""
        with self._lock:
            return self._take_ended(self._clock())

    def drain(self) -> list[Summary]:
        """Every window's summary, ended or not (the agent is stopping)."""
        with self._lock:
            return self._take_ended(float("inf"))

    def _take_ended(self, now: float) -> list[Summary]:
        ended = [key for key, (started, _) in self._open.items() if now - started >= self.interval]
        summaries = []
        for key in ended:
            started, count = self._open.pop(key)
            if count:
                summaries.append(Summary(key[0], key[1], int(count), started, self.interval))
        return summaries
