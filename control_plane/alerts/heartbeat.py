"""The dead-man heartbeat: the alert emitter pings a URL elsewhere every interval, so that its silence pages.

An emitter that died (or hangs) sends no alert about itself; a heartbeat checker elsewhere
(healthchecks.io, Uptime Kuma's push monitor, a PagerDuty heartbeat, a second ntfy topic watched by
a script) pages when the pings stop. :class:`Heartbeat` runs in its own daemon thread: a ping that
hangs is cut at ``timeout_s`` and never delays the engine, a ping that fails is logged and the
next one goes at its time anyway. Pings keep a fixed cadence (ticks of ``interval_s`` from the
start; a tick missed while a ping was still out is skipped, not bunched).

A ping URL usually *is* its credential (a check's UUID in the path, a token in the query), so logs
and :class:`Ping` records show only ``scheme://host[:port]`` (:func:`redact_url`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
DEFAULT_TIMEOUT_S = 10.0
METHODS = ("GET", "POST")


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: where the ping goes, without the path or query that hold its secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Ping:
    """One ping: when it started, how long it took, and the HTTP status or why there was none."""

    started_at: float  # unix seconds
    elapsed_s: float
    ok: bool
    status: int | None
    error: str  # "" when ok; names a status or an exception class, never the URL


class Heartbeat:
    """Pings ``url`` (``GET`` or ``POST``) every ``interval_s`` from :meth:`start` until :meth:`stop`."""

    def __init__(self, url: str, *, interval_s: float = DEFAULT_INTERVAL_S, timeout_s: float = DEFAULT_TIMEOUT_S,
                 method: str = "GET", record: Callable[[Ping], None] | None = None) -> None:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError(f"heartbeat url: value {redact_url(url)!r}: expected an http:// or https:// URL")
        if method.upper() not in METHODS:
            raise ValueError(f"heartbeat method: value {method!r}: expected one of {', '.join(METHODS)}")
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError(f"heartbeat interval_s {interval_s}, timeout_s {timeout_s}: expected positive seconds")
        self.url = url
        self.where = redact_url(url)
        self.method = method.upper()
        self.interval_s = interval_s
        # a ping never outlives its tick: the next one is due then
        self.timeout_s = min(timeout_s, interval_s)
        self.record = record
        self.last: Ping | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop pinging; returns within ``timeout_s`` even if a ping is hanging."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s + 1.0)

    def ping(self) -> Ping:
        """One ping now, bounded by ``timeout_s``; logged and passed to ``record``."""
        started, clock = time.time(), time.monotonic()
        try:
            response = requests.request(self.method, self.url, timeout=self.timeout_s,
                                        headers={"User-Agent": "cinefleet-alerts-heartbeat"})
            ok = 200 <= response.status_code < 300
            ping = Ping(started, time.monotonic() - clock, ok, response.status_code,
                        "" if ok else f"HTTP {response.status_code}")
        except requests.RequestException as exc:
            ping = Ping(started, time.monotonic() - clock, False, None, f"no HTTP response ({type(exc).__name__})")
        self.last = ping
        if ping.ok:
            log.info("heartbeat %s %s: HTTP %s in %.3f s", self.method, self.where, ping.status, ping.elapsed_s)
        else:
            log.warning("heartbeat %s %s failed: %s after %.3f s", self.method, self.where, ping.error,
                        ping.elapsed_s)
        if self.record is not None:
            try:
                self.record(ping)
            except Exception:
                log.exception("recording a heartbeat ping failed")
        return ping

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            self.ping()
            # the next tick after now: a ping slower than the interval skips the ticks it covered
            tick = max(tick + 1, int((time.monotonic() - start) / self.interval_s) + 1)
            self._stop.wait(max(0.0, start + tick * self.interval_s - time.monotonic()))
