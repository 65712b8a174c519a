"""The health board: the latest health sample of this host, for ``GetHealth`` and the ``WatchHealth`` streams.

The health loop publishes to it once per interval; RPC threads read it without waiting on the
loop, and streams wait on its condition for the next sample (or for the agent to stop).
"""

from __future__ import annotations

import threading

from protos import telemetry_pb2


class HealthBoard:
    """The latest health sample, for ``GetHealth``, and a condition ``WatchHealth`` streams wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest = telemetry_pb2.HostHealth()
        self._seq = 0
        self.closed = False

    def publish(self, sample: telemetry_pb2.HostHealth) -> None:
        with self._cond:
            self._latest, self._seq = sample, self._seq + 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, telemetry_pb2.HostHealth]:
        with self._cond:
            return self._seq, self._latest

    def wait_newer(self, seq: int, timeout: float) -> tuple[int, telemetry_pb2.HostHealth] | None:
        """The next sample after ``seq``; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self._seq > seq, timeout)
            return None if self.closed or self._seq <= seq else (self._seq, self._latest)

    def wake(self) -> None:
        """Wake every waiting stream (one whose client went away then sees it and ends)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
