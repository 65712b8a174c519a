"""The agent's way to its site: one shared client, and the thread that tells the site this host's state."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from operator import methodcaller
from pathlib import Path
from typing import TypeVar

import redis
import sqlalchemy.exc

from site_scheduler.client import SiteClient
from site_scheduler.config import read_endpoints
from site_scheduler.errors import ControlRefused, SiteError

log = logging.getLogger(__name__)

#: After a failed ``mark-host``, wait this long before trying again.
PUSH_RETRY_S = 5.0
#: The pushed state is checked at the site (which forgets it when its Redis is reset) every
#: this many health intervals.
RECHECK_INTERVALS = 10

#: What reaching the site raises when it is down, restarting or not started yet.
SITE_ERRORS = (SiteError, redis.exceptions.RedisError, sqlalchemy.exc.SQLAlchemyError, OSError)
#: How much of an error's text goes into a result, a health reason or a log line.
MAX_ERROR_CHARS = 200

T = TypeVar("T")


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, cut to :data:`MAX_ERROR_CHARS`."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class SiteLink:
    """One :class:`SiteClient` shared by the RPC threads, made again after the site fails (it may have moved)."""

    def __init__(self, site: str, data_dir: Path) -> None:
        self.site, self.data_dir = site, Path(data_dir)
        self._client: SiteClient | None = None
        self._lock = threading.Lock()

    def client(self) -> SiteClient:
        with self._lock:
            if self._client is None:
                self._client = SiteClient(read_endpoints(self.site, self.data_dir))
            return self._client

    def call(self, work: Callable[[SiteClient], T]) -> T:
        """``work(client)``; a site error (not a refusal) drops the client so the next call finds the site anew."""
        client = self.client()
        try:
            return work(client)
        except ControlRefused:
            raise
        except SITE_ERRORS:
            self.reset(client)
            raise

    def reset(self, client: SiteClient | None = None) -> None:
        with self._lock:
            if self._client is not None and (client is None or client is self._client):
                with contextlib.suppress(*SITE_ERRORS):
                    self._client.close()
                self._client = None

    def close(self) -> None:
        self.reset()


class HostStatePusher(threading.Thread):
    """Tells the site this host's state (``mark-host``) whenever it changes; retries until the site takes it.

    Its own thread, because a control waits for the site's answer (up to 15 s when the site is
    down) and the health loop must not.
    """

    def __init__(self, host: str, link: SiteLink, interval: float) -> None:
        super().__init__(name="host-state", daemon=True)
        self.host, self.link = host, link
        self.recheck_s = interval * RECHECK_INTERVALS
        self.pushed: str | None = None
        self._wanted: str | None = None
        self._wake, self._stop = threading.Event(), threading.Event()

    def want(self, state: str) -> None:
        self._wanted = state
        self._wake.set()

    def run(self) -> None:
        failed: str | None = None
        checked = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            wanted = self._wanted
            if wanted is None or wanted == self.pushed:
                self._wake.wait(self.recheck_s)  # the health loop wakes it once per sample
                if wanted is not None and time.monotonic() >= checked + self.recheck_s:
                    checked = time.monotonic()
                    if not self._site_agrees(wanted):
                        log.warning("the site lost host %s's state %s (its Redis was reset?); pushing it again",
                                    self.host, wanted)
                        self.pushed = None
                continue
            try:
                # methodcaller binds this pass's state (a lambda default would, but mypy cannot type that lambda).
                self.link.call(methodcaller("control", "mark-host", host=self.host, state=wanted))
            except (ControlRefused, *SITE_ERRORS) as exc:
                # Once per state at warning level: a host whose workers have not reported yet is refused for a while.
                level = logging.WARNING if failed != wanted else logging.DEBUG
                log.log(level, "could not mark host %s %s at the site (trying again every %g s): %s", self.host,
                        wanted, PUSH_RETRY_S, exc)
                failed = wanted
                self._stop.wait(PUSH_RETRY_S)
                continue
            log.info("host %s marked %s at the site", self.host, wanted)
            self.pushed, failed = wanted, None

    def _site_agrees(self, state: str) -> bool:
        """Does the site still hold the state pushed last? (A site that cannot be read is not doubted.)"""
        try:
            return self.link.call(lambda site: site.host_state(self.host)) == state
        except SITE_ERRORS:
            return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
