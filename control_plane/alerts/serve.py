"""``cinefleet alerts serve``: the emitter's own process, so alerts keep coming while the web process is down.

It reads the fleet database each tick and writes only the alert tables; it never calls the web
process and never touches a site. SIGTERM or SIGINT stop it after the current tick, giving
delivery a moment to finish what it holds; whatever it could not finish stays ``pending`` in the
outbox and is sent by whichever emitter takes the lease next (released at a clean stop; after a
kill, once it lapses).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from control_plane.alerts.ack import ACK_KEY_FILE, load_key
from control_plane.alerts.config import AlertConfig, ConfigError
from control_plane.alerts.engine import Emitter, receivers_of
from control_plane.database import migrate, open_engine, sqlite_url

log = logging.getLogger(__name__)

FLEET_DB = "fleet.db"
#: Seconds delivery may take to finish after a stop was asked for.
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Where:
    """Where the emitter's database and ack key are: a centre's folder, or a URL plus the config's key file."""

    control_dir: Path | None
    db_url: str | None

    def database_url(self) -> str:
        if (self.control_dir is None) == (self.db_url is None):
            raise ConfigError("--control-dir / --db-url: expected exactly one of them")
        if self.db_url is not None:
            return self.db_url
        assert self.control_dir is not None
        if not self.control_dir.is_dir():
            raise ConfigError(f"--control-dir: value {str(self.control_dir)!r}: expected the centre's existing "
                              "data folder")
        return sqlite_url(self.control_dir / FLEET_DB)

    def ack_key(self, config: AlertConfig) -> bytes:
        """The ack key: the config's file, else the centre folder's (made on first use)."""
        if config.ack_key_file is not None:
            return load_key(config.ack_key_file, create=True)
        if self.control_dir is None:
            raise ConfigError("ack_key_file: not set; expected it in the configuration with --db-url (the web "
                              f"process reads the same file, DATA_DIR/{ACK_KEY_FILE})")
        return load_key(self.control_dir / ACK_KEY_FILE, create=True)

    def engine(self) -> Engine:
        engine = open_engine(self.database_url())
        migrate(engine)
        return engine


def run(emitter: Emitter, tick_s: float, stop: threading.Event,
        on_tick: Callable[[], None] | None = None) -> None:
    """Tick until ``stop``; a database that does not answer is logged and tried again next tick."""
    failing = False
    while not stop.is_set():
        started = time.monotonic()
        try:
            report = emitter.tick()
            if failing:
                log.info("fleet database answers again; alerting resumed")
            failing = False
            if report.opened or report.resolved or report.sent:
                log.info("tick: %d opened, %d repeated, %d resolved, %d notifications", report.opened,
                         report.repeated, report.resolved, report.sent)
            if report.resumed:
                log.info("took the lease: resumed %d notifications left pending by the previous holder",
                         report.resumed)
            if report.held_because:
                log.warning("%s", report.held_because)
        except DBAPIError as exc:  # the database went away or restarted: it is retried, not fatal
            if not failing:
                log.error("fleet database unavailable, retrying every tick: %s", str(exc).splitlines()[0])
            failing = True
        if on_tick is not None:
            on_tick()
        stop.wait(max(0.0, tick_s - (time.monotonic() - started)))


def serve(where: Where, config: AlertConfig) -> None:
    """Run the emitter until SIGTERM/SIGINT."""
    from control_plane.alerts.delivery import Deliverer
    from control_plane.alerts.heartbeat import Heartbeat

    key = where.ack_key(config)
    engine = where.engine()
    emitter = Emitter(engine, config, key)
    deliverer = Deliverer(receivers_of(config), emitter.record)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    heartbeat = (Heartbeat(config.deadman.url, interval_s=config.deadman.interval, method=config.deadman.method)
                 if config.deadman else None)
    try:
        if heartbeat is not None:
            heartbeat.start()
        emitter.attach(deliverer)
        if not config.receivers:
            log.warning("no receivers configured: alerts are recorded and listed, sent nowhere")
        log.info("alerts serve: ticking every %g s", config.tick)
        run(emitter, config.tick, stop)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        deliverer.wait_idle(STOP_GRACE_S)
        deliverer.close()
        try:  # only once delivery let go: a standby that took over earlier could resend what it still held
            emitter.release()
        except DBAPIError as exc:
            log.warning("lease not released (a standby takes over when it lapses): %s", str(exc).splitlines()[0])
        engine.dispose()
