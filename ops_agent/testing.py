"""A real agent to test against: ``cinefleet agent serve`` as a subprocess, every wait bounded.

Shipped in the package so that the agent's tests, ``cinefleet bench agent`` and a control
plane's tests start the same real agent (a site comes from :mod:`site_scheduler.testing`)
without importing another suite's conftest. Nothing here imports pytest: a failure raises
``AssertionError`` (or :class:`~pipeline.testing.WaitTimeout`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops_agent.client import AgentClient
from ops_agent.config import AGENT_FILE, AUDIT_FILE
from pipeline.testing import wait_for

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 60


@dataclass
class AgentProcess:
    """``cinefleet agent serve`` on a loopback port the agent picks (read back from its ``agent.json``)."""

    host: str
    site: str
    data_dir: Path
    state_dir: Path
    trust: Path
    log: Path
    workers: str | None = None
    tls_dir: Path | None = None
    options: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    address: str = ""

    @property
    def audit(self) -> Path:
        return self.state_dir / AUDIT_FILE

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "cinefleet", "agent", "serve", "--host", self.host, "--site", self.site,
                   "--data-dir", str(self.data_dir), "--state-dir", str(self.state_dir), "--listen", "127.0.0.1:0",
                   "--trust", str(self.trust), *self.options]
        if self.workers:
            command += ["--workers", self.workers]
        if self.tls_dir is not None:
            command += ["--tls-dir", str(self.tls_dir)]
        return command

    def start(self) -> str:
        """Start the agent and wait until it serves; return its address (``127.0.0.1:PORT``)."""
        (self.state_dir / AGENT_FILE).unlink(missing_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True,
                                            env={**os.environ, **self.env})
        info = wait_for(self._started, f"agent {self.host} to serve (log: {self.log})", START_TIMEOUT_S)
        self.address = info["listen"]
        return self.address

    def _started(self) -> dict[str, Any] | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"agent {self.host} exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            info = json.loads((self.state_dir / AGENT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.process.pid else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the agent (it stops its workers) and return its exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise AssertionError(f"agent {self.host} did not stop within {STOP_TIMEOUT_S} s") from None
        self.process = None
        return code

    def client(self, **options: Any) -> AgentClient:
        """A client of this agent, over TLS when the agent has a ``tls_dir`` (unless ``tls_dir=`` says otherwise)."""
        tls_dir = self.tls_dir if "tls_dir" not in options else options.pop("tls_dir")
        if tls_dir is not None:  # the agent's certificate is checked as this host's
            options.setdefault("host", self.host)
        return AgentClient(self.address, tls_dir, **options)

    def audit_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
