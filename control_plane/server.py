"""``cinefleet control serve``: the centre's ingest process (gRPC ``Replication``) over the fleet database.

It keeps no state outside the database: any number of them can serve one PostgreSQL, and a
restarted one carries on from the cursors there. Without TLS it listens on loopback only (a
site's token would otherwise cross the network in clear). ``DIR/control.json`` says where it
listens, as ``site.json`` does for a site; the database URL is not written (it may hold a password).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy.engine import Engine

from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.errors import ControlInputError
from control_plane.health import DEFAULT_INTERVAL_S, HISTORY_S, Telemetry
from control_plane.ingest import Ingest
from control_plane.servicer import ReplicationServicer
from control_plane.sites import Gate
from protos import replication_pb2_grpc

log = logging.getLogger(__name__)

CONTROL_FILE = "control.json"
FLEET_DB = "fleet.db"
DEFAULT_GRPC = "127.0.0.1:50161"
#: Concurrent calls served (pushes of different sites, host reports).
GRPC_THREADS = 8
#: A batch is at most ``ingest.MAX_BATCH_EVENTS`` events; this bounds its bytes.
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
SHUTDOWN_GRACE_S = 5.0


@dataclass(frozen=True)
class ControlConfig:
    """What ``control serve`` is told: where its data and database are, where to listen, liveness timing."""

    data_dir: Path
    db_url: str | None = None
    grpc_listen: str = DEFAULT_GRPC
    interval_s: float = DEFAULT_INTERVAL_S
    history_s: float = HISTORY_S

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir / FLEET_DB)


def check_listen(listen: str) -> None:
    """Refuse an address that is not ``HOST:PORT`` on loopback (the centre has no TLS of its own yet)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ControlInputError(f"--grpc: value {listen!r}: expected HOST:PORT, e.g. {DEFAULT_GRPC}")
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if not loopback:
        raise ControlInputError(f"--grpc: value {listen!r}: expected a loopback address (127.0.0.1, ::1 or "
                                "localhost): without TLS the sites' tokens must not cross the network")


def open_fleet(config: ControlConfig) -> Engine:
    """The fleet database, migrated to head (the first start creates it, in a 0700 data folder)."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = open_engine(config.database_url)
    migrate(engine)
    return engine


class ControlServer:
    """The ingest server: :meth:`start` returns the address, :meth:`close` stops it."""

    def __init__(self, config: ControlConfig) -> None:
        check_listen(config.grpc_listen)
        if not 0.05 <= config.interval_s <= 3600:
            raise ControlInputError(f"--interval: value {config.interval_s!r}: expected 0.05 to 3600 seconds")
        self.config = config
        self.engine = open_fleet(config)
        self.servicer = ReplicationServicer(Ingest(self.engine),
                                            Telemetry(self.engine, default_interval_s=config.interval_s,
                                                      history_s=config.history_s),
                                            Gate(self.engine))
        self.server = grpc.server(futures.ThreadPoolExecutor(GRPC_THREADS, thread_name_prefix="ingest"),
                                  options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                                           ("grpc.so_reuseport", 0)])
        replication_pb2_grpc.add_ReplicationServicer_to_server(self.servicer, self.server)
        self.address = ""

    def start(self) -> str:
        listen = self.config.grpc_listen
        try:
            port = self.server.add_insecure_port(listen)
        except RuntimeError as exc:
            raise ControlInputError(f"--grpc: cannot listen on {listen}: {exc}") from None
        if not port:
            raise ControlInputError(f"--grpc: cannot listen on {listen}")
        self.server.start()
        self.address = f"{listen.rpartition(':')[0]}:{port}"
        self._write_control_file()
        return self.address

    def _write_control_file(self) -> None:
        path = self.config.data_dir / CONTROL_FILE
        data = {"grpc": self.address, "pid": os.getpid(), "data_dir": str(self.config.data_dir),
                "database": self.engine.dialect.name, "interval_s": self.config.interval_s}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)

    def close(self) -> None:
        self.server.stop(SHUTDOWN_GRACE_S).wait()
        (self.config.data_dir / CONTROL_FILE).unlink(missing_ok=True)
        self.engine.dispose()


def read_control_file(data_dir: Path) -> dict[str, object]:
    """What a running centre wrote about itself; a missing or torn file names the folder."""
    path = Path(data_dir) / CONTROL_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ControlInputError(f"{path}: no readable control.json ({exc}); is `cinefleet control serve "
                                f"--data-dir {data_dir}` running?") from None
    if not isinstance(data, dict):
        raise ControlInputError(f"{path}: expected a JSON object")
    return data


def serve(config: ControlConfig, stop: threading.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT in the main thread)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ControlServer(config)
    try:
        address = server.start()
        log.info("control plane ingest on %s (%s fleet database)", address, server.engine.dialect.name)
        stop.wait()
    finally:
        server.close()
