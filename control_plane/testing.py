"""A real centre to test against: ``cinefleet control serve`` as a subprocess, every wait bounded.

Shipped in the package, as :mod:`site_scheduler.testing`'s ``Site`` and
:mod:`ops_agent.testing`'s ``AgentProcess`` are, so that the control plane's tests and
benchmarks start the same real centre. It reads what the centre knows straight from the fleet
database through the read model (:class:`~control_plane.fleet.Fleet`), as the API does.
Nothing here imports pytest: a failure raises ``AssertionError`` (or ``WaitTimeout``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.database import open_engine
from control_plane.fleet import SITE_TIMEOUT_S, Fleet, Liveness
from control_plane.server import CONTROL_FILE, ControlConfig

T = TypeVar("T")

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


def _wait(check: Callable[[], T | None], what: str, timeout: float) -> T:
    """``pipeline.testing.wait_for``, which control_plane may not import: the same bounded poll."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Centre:
    """One ``control serve`` process over ``data_dir`` (and ``db_url`` when given); :meth:`close` stops it."""

    data_dir: Path
    logs: Path
    db_url: str | None = None
    interval_s: float = 5.0
    site_timeout_s: float = SITE_TIMEOUT_S
    name: str = "centre"
    #: A key folder (``cinefleet keys init``) the agents trust: given, a signer process is started with it.
    keys: Path | None = None
    approvals: tuple[str, ...] = ()
    #: A ``cinefleet pki init`` folder: commands go to the agents over mTLS.
    agent_tls_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    signer: subprocess.Popen[bytes] | None = None
    address: str = ""
    #: The API's base URL (``http://127.0.0.1:PORT``).
    url: str = ""
    _engine: Engine | None = field(default=None, repr=False)

    def __enter__(self) -> Centre:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _options(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), *(["--db-url", self.db_url] if self.db_url else [])]

    def start(self, listen: str | None = None) -> str:
        """Start ``control serve`` (on ``listen``, default the previous address or a free port) and wait for it."""
        listen = listen or self.address or "127.0.0.1:0"
        (self.data_dir / CONTROL_FILE).unlink(missing_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.keys is not None and self.signer is None:
            self._start_signer()
        http = self.url.removeprefix("http://") or "127.0.0.1:0"
        command = [sys.executable, "-m", "cinefleet", "control", "serve", *self._options(), "--grpc", listen,
                   "--http", http, "--interval", str(self.interval_s), "--site-timeout", str(self.site_timeout_s),
                   *(f"--approval={a}" for a in self.approvals),
                   *(["--tls-dir", str(self.agent_tls_dir)] if self.agent_tls_dir else [])]
        with (self.logs / f"{self.name}.log").open("ab") as log:
            self.process = process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        info = _wait(lambda: self._started(process), f"{self.name} to serve", START_TIMEOUT_S)
        self.address, self.url = str(info["grpc"]), str(info["http"])
        return self.address

    def _start_signer(self) -> None:
        """``control signer`` with the trusted key folder copied in as its key (only the signer reads it)."""
        assert self.keys is not None
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (self.data_dir / "keys").exists():
            shutil.copytree(self.keys, self.data_dir / "keys")
        (self.data_dir / "signer.json").unlink(missing_ok=True)
        command = [sys.executable, "-m", "cinefleet", "control", "signer", *self._options(),
                   *(f"--approval={a}" for a in self.approvals)]
        with (self.logs / f"{self.name}-signer.log").open("ab") as log:
            self.signer = signer = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)

        def ready() -> bool:
            if signer.poll() is not None:
                log = (self.logs / f"{self.name}-signer.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"{self.name}'s signer exited {signer.returncode}: {log}")
            return (self.data_dir / "signer.json").exists()

        _wait(ready, f"{self.name}'s signer", START_TIMEOUT_S)

    def _started(self, process: subprocess.Popen[bytes]) -> dict[str, Any] | None:
        if process.poll() is not None:
            log = (self.logs / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"{self.name} exited {process.returncode}: {log}")
        try:
            info = json.loads((self.data_dir / CONTROL_FILE).read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and info.get("pid") == process.pid else None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None, f"{self.name} is not running"
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise AssertionError(f"{self.name} did not stop within {STOP_TIMEOUT_S} s") from None
        finally:
            self.process = None

    def add_site(self, site_id: str, token_file: Path) -> str:
        """``control site add SITE --token-file FILE``; returns the token."""
        result = subprocess.run([sys.executable, "-m", "cinefleet", "control", "site", "add", site_id,
                                 *self._options(), "--token-file", str(token_file)],
                                capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(f"control site add {site_id} exited {result.returncode}: {result.stderr}")
        return result.stdout.strip()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_engine(self.db_url or ControlConfig(self.data_dir).database_url)
        return self._engine

    @contextmanager
    def fleet(self, now: float | None = None) -> Iterator[Fleet]:
        """The read model over the centre's database, judged with its interval."""
        with Session(self.engine) as session:
            yield Fleet(session, Liveness(self.interval_s, self.site_timeout_s), now)

    def wait_until(self, check: Callable[[Fleet], T | None], what: str, timeout: float = 60) -> T:
        """Poll ``check`` over a fresh read model until it returns something truthy."""
        def look() -> T | None:
            with self.fleet() as fleet:
                return check(fleet)

        return _wait(look, what, timeout)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        self.process = None
        if self.signer is not None:
            self.signer.send_signal(signal.SIGTERM)
            try:
                self.signer.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.signer.pid, signal.SIGKILL)
                self.signer.wait(timeout=10)
            self.signer = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
