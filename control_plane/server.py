"""``cinefleet control serve``: the centre's process: gRPC ingest (``Replication``) and the HTTP API
(``/api/v1``, uvicorn in a thread) over the fleet database.

The signing key is not here: commands are signed by ``cinefleet control signer``, a separate process
this one reaches over its Unix socket (``DIR/signer.sock`` by default); without it, commands fail
with "signer unavailable" and nothing is sent.

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
import socket
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from control_plane.alerts.ack import ACK_KEY_FILE
from control_plane.api import create_app
from control_plane.commands import Commands, parse_policy
from control_plane.costs import load_budgets
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.directory import FleetDirectory
from control_plane.errors import ControlInputError
from control_plane.fleet import SITE_TIMEOUT_S, Liveness
from control_plane.health import DEFAULT_INTERVAL_S, HISTORY_S, Telemetry
from control_plane.ingest import Ingest
from control_plane.people import People
from control_plane.servicer import ReplicationServicer
from control_plane.signer import SignerClient
from control_plane.sites import Gate
from protos import replication_pb2_grpc

log = logging.getLogger(__name__)

CONTROL_FILE = "control.json"
FLEET_DB = "fleet.db"
DEFAULT_GRPC = "127.0.0.1:50161"
DEFAULT_HTTP = "127.0.0.1:50180"
SIGNER_SOCKET = "signer.sock"
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
    #: The HTTP API's address; None serves ingest only.
    http_listen: str | None = DEFAULT_HTTP
    site_timeout_s: float = SITE_TIMEOUT_S
    #: The signer's Unix socket; None: ``DIR/signer.sock``.
    signer_socket: Path | None = None
    #: Actions that need a second person's approval (the signer is given the same list).
    approvals: tuple[str, ...] = ()
    #: A ``cinefleet pki init`` folder for mTLS to the agents; None: plain gRPC on loopback.
    agent_tls_dir: Path | None = None

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir / FLEET_DB)

    @property
    def liveness(self) -> Liveness:
        return Liveness(self.interval_s, self.site_timeout_s)


def check_listen(listen: str, option: str = "--grpc", example: str = DEFAULT_GRPC) -> None:
    """Refuse an address that is not ``HOST:PORT`` on loopback (the centre has no TLS of its own yet)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ControlInputError(f"{option}: value {listen!r}: expected HOST:PORT, e.g. {example}")
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if not loopback:
        raise ControlInputError(f"{option}: value {listen!r}: expected a loopback address (127.0.0.1, ::1 or "
                                "localhost): without TLS the sites' and users' tokens must not cross the network")


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
        if config.http_listen is not None:
            check_listen(config.http_listen, "--http", DEFAULT_HTTP)
        if not 0.05 <= config.interval_s <= 3600:
            raise ControlInputError(f"--interval: value {config.interval_s!r}: expected 0.05 to 3600 seconds")
        policy = parse_policy(config.approvals)
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
        self.http: _HttpServer | None = None
        if config.http_listen is not None:
            commands = Commands(self.engine, FleetDirectory(self.engine, config.liveness),
                                SignerClient(config.signer_socket or config.data_dir / SIGNER_SOCKET),
                                policy=policy, tls_dir=config.agent_tls_dir)
            self.http = _HttpServer(create_app(self.engine, People(self.engine), commands, config.liveness,
                                               load_budgets(config.data_dir),
                                               ack_key_file=config.data_dir / ACK_KEY_FILE), config.http_listen)

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
        if self.http is not None:
            self.http.start()
        self._write_control_file()
        return self.address

    def _write_control_file(self) -> None:
        path = self.config.data_dir / CONTROL_FILE
        data = {"grpc": self.address, "http": self.http.url if self.http else None, "pid": os.getpid(),
                "data_dir": str(self.config.data_dir),
                "database": self.engine.dialect.name, "interval_s": self.config.interval_s}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        self.server.stop(SHUTDOWN_GRACE_S).wait()
        (self.config.data_dir / CONTROL_FILE).unlink(missing_ok=True)
        self.engine.dispose()


class _HttpServer:
    """uvicorn in a thread, on a socket bound here (port 0 picks one) so the address is known at once."""

    def __init__(self, app: FastAPI, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            self.socket = socket.create_server((host, int(port)), family=socket.AF_INET6 if ":" in host
                                               else socket.AF_INET)
        except OSError as exc:
            raise ControlInputError(f"--http: cannot listen on {listen}: {exc.strerror or exc}") from None
        # Accepted connections inherit this. asyncio sets TCP_NODELAY only on sockets whose proto is
        # IPPROTO_TCP, and create_server's is 0: without it every response waited ~40 ms for the
        # client's delayed ACK (Nagle), measured by ``bench dashboard`` on a static file.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bound = self.socket.getsockname()
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound[1]}"
        # Access logs stay off: tokens travel in headers, and callers need no logging here.
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="control-api", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


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
        log.info("control plane ingest on %s, API on %s (%s fleet database)", address,
                 server.http.url if server.http else "(none)", server.engine.dialect.name)
        stop.wait()
    finally:
        server.close()
