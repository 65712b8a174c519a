"""``cinefleet site serve``: bring a site up (Redis, database, endpoints file) and schedule.

The scheduler process owns the Redis it started: it stops it on the way out. Stopping the
scheduler loses nothing: submissions, results and controls wait in Redis, and the next start
picks them up.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from pipeline.errors import InputError
from pipeline.store import make_files_private
from site_scheduler.api import ApiServer
from site_scheduler.builds import own_builds, pin_builds
from site_scheduler.client import SiteClient
from site_scheduler.config import (
    DEFAULT_HEARTBEAT_TTL_S,
    DEFAULT_REDIS_TIMEOUT_S,
    DEFAULT_TENANT,
    HEARTBEAT_TTL_RANGE_S,
    REDIS_TIMEOUT_RANGE_S,
    SiteEndpoints,
    check_seconds,
    check_tenant,
    ensure_api_token,
    make_data_dir,
    sqlite_url_for,
    write_endpoints,
)
from site_scheduler.database import migrate, open_engine
from site_scheduler.errors import SiteError
from site_scheduler.redis_server import RedisServer, start_redis
from site_scheduler.scheduler import Scheduler
from site_scheduler.shipper import Shipper, read_token

log = logging.getLogger(__name__)

LOCK_FILE = "scheduler.lock"
#: The site's push token for the control plane, unless ``--control-token-file`` names another file.
CONTROL_TOKEN_FILE = "control.token"
#: Seconds a stopping site waits for a push in flight.
SHIPPER_STOP_S = 5.0


def serve(site_id: str, data_dir: Path, redis_url: str | None = None, db_url: str | None = None,
          ready: threading.Event | None = None, stop: threading.Event | None = None,
          api_port: int | None = None, tenant: str = DEFAULT_TENANT,
          project_roots: Sequence[Path] = (), control: str | None = None,
          control_token_file: Path | None = None, repin_builds: bool = False,
          heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S, redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S) -> None:
    """Serve the site until ``stop`` (or SIGTERM/SIGINT); every run submitted to it renders for ``tenant``.

    ``project_roots`` are the folders the HTTP API takes project files from (none: it takes none).
    With ``control`` (the centre's ``HOST:PORT``) a :class:`~site_scheduler.shipper.Shipper` thread
    pushes the outbox there with the token in ``control_token_file`` (default ``DATA_DIR/control.token``).
    The site keeps the media builds it pinned first; ``repin_builds`` pins this host's instead.
    ``heartbeat_ttl_s`` and ``redis_timeout_s`` go to ``site.json`` for every process of the site.
    """
    check_tenant(tenant)
    check_seconds("--heartbeat-ttl", heartbeat_ttl_s, HEARTBEAT_TTL_RANGE_S)
    check_seconds("--redis-timeout", redis_timeout_s, REDIS_TIMEOUT_RANGE_S)
    roots = [root.resolve() for root in project_roots]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        raise InputError(f"--project-root: value {', '.join(missing)}: expected an existing folder")
    data_dir = data_dir.resolve()
    token = read_token(control_token_file or data_dir / CONTROL_TOKEN_FILE) if control else None
    make_files_private()
    make_data_dir(data_dir)
    lock = hold_scheduler_lock(site_id, data_dir)
    server: RedisServer | None = None
    if redis_url is None:
        port_file = data_dir / "redis" / "port"
        port = int(port_file.read_text()) if port_file.is_file() else None
        server = start_redis(data_dir / "redis", port)
        port_file.write_text(str(server.port))
        redis_url = server.url
    db_url = db_url or sqlite_url_for(data_dir)
    engine = open_engine(db_url)
    migrate(engine)
    builds = pin_builds(engine, site_id, own_builds(), repin=repin_builds)
    endpoints = SiteEndpoints(site_id=site_id, data_dir=str(data_dir), redis_url=redis_url, db_url=db_url,
                              store=str(data_dir / "store"), scheduler_pid=os.getpid(), tenant=tenant,
                              builds=builds, heartbeat_ttl_s=heartbeat_ttl_s, redis_timeout_s=redis_timeout_s)
    api: ApiServer | None = None
    if api_port is not None:
        api = ApiServer(SiteClient(endpoints), api_port, ensure_api_token(data_dir), roots)
        api.start()
        endpoints = dataclasses.replace(endpoints, api_url=api.url)
    write_endpoints(endpoints)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler = Scheduler(endpoints, engine)
    shipper = Shipper(site_id, engine, control, token) if control and token else None
    if shipper is not None:
        shipper.start()
    log.info("site %s scheduling on %s%s", site_id, redis_url, f", API on {api.url}" if api else "")
    if ready is not None:
        ready.set()
    try:
        scheduler.run_forever(stop, supervise=server)
    finally:
        if shipper is not None:
            shipper.stop()
            shipper.join(SHIPPER_STOP_S)
        if api is not None:
            api.stop()
        scheduler.broker.close()
        engine.dispose()
        if server is not None:
            server.stop()
        lock.close()


def hold_scheduler_lock(site_id: str, data_dir: Path) -> IO[str]:
    """Claim the data folder for this scheduler for as long as the returned file stays open.

    Two schedulers on one folder would send the same stage twice as the same attempt and
    race each other's results; the kernel drops the lock when the process dies, however.
    """
    handle = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SiteError(f"{data_dir}: site {site_id} is already served by the scheduler with pid {holder}; "
                        "stop it before starting another") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
