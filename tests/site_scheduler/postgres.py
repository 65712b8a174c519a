"""A throwaway PostgreSQL cluster on a loopback port, for tests (server binaries from Debian)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from site_scheduler.redis_server import free_port


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


#: Running clusters by URL: what :func:`restart` needs to stop and start one on the same port.
_RUNNING: dict[str, list[str]] = {}


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yield a SQLAlchemy URL to a fresh cluster; fails in CI when PostgreSQL is missing."""
    binaries = _binaries()
    if binaries is None or shutil.which("runuser") is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing; scripts/setup installs them")
        pytest.skip("PostgreSQL server binaries are not installed")
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-pg-"))
    data = folder / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run([*as_postgres, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "cinefleet",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        control = [*as_postgres, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                   "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"]
        subprocess.run([*control, "start"], check=True, capture_output=True, timeout=120)
        url = f"postgresql+psycopg://cinefleet@127.0.0.1:{port}/postgres"
        _RUNNING[url] = control
        yield url
    finally:
        subprocess.run([*as_postgres, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        time.sleep(0.1)
        _RUNNING.pop(f"postgresql+psycopg://cinefleet@127.0.0.1:{port}/postgres", None)
        shutil.rmtree(folder, ignore_errors=True)


def restart(url: str, down_s: float) -> None:
    """Stop the cluster at ``url`` (fast shutdown: every connection is cut), wait ``down_s``, start it again."""
    control = _RUNNING[url]
    subprocess.run([*control, "-m", "fast", "stop"], check=True, capture_output=True, timeout=120)
    time.sleep(down_s)
    subprocess.run([*control, "start"], check=True, capture_output=True, timeout=120)
