"""Keeps this host's dramatiq workers running: one ``cinefleet worker`` subprocess per spec.

The supervisor has no thread of its own. Call :meth:`Supervisor.start` once,
:meth:`Supervisor.poll` periodically (the agent's health loop does it once a second; a
dedicated thread works as well, the methods take a lock), and :meth:`Supervisor.stop` on
shutdown. ``poll`` never blocks: a worker that exited is started again once its backoff delay
has passed (0.5 s, doubling to 30 s; back to 0.5 s for a worker that had stayed up 60 s).

Workers run as ``python -m cinefleet worker --site S --data-dir D --queues Q --name N --host H``
from an argument list, never a shell, in their own session (so a SIGKILL after the stop
deadline also reaches the ffmpeg they started), with stdout and stderr appended to
``LOG_DIR/<name>.log``. ``LOG_DIR/<name>.pid`` records the running pid: a supervisor that starts
after its predecessor died without stopping its workers first stops the orphans, so two
processes never heartbeat under one worker name.

A worker that the operator restarts through the site re-executes itself under the same pid; to
the supervisor its process never exited, so it is not a crash and is not counted. Every exit
the supervisor did not ask for, whatever its code, is restarted and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from ops_agent.errors import AgentInputError
from protos.actions import QUEUES

log = logging.getLogger(__name__)

#: First delay before a crashed worker is started again.
BACKOFF_INITIAL_S = 0.5
#: The delay doubles per crash up to this.
BACKOFF_MAX_S = 30.0
#: A worker that stayed up this long before it exited starts again after the first delay.
STABLE_AFTER_S = 60.0
#: How long :meth:`Supervisor.stop` waits after SIGTERM before it SIGKILLs what is left.
STOP_TIMEOUT_S = 30.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class WorkerSpecError(AgentInputError):
    """Raised when a worker spec is malformed; the message names the value and what was expected."""


@dataclass(frozen=True)
class WorkerSpec:
    """One worker this host runs: its name (unique in the site) and the queues it consumes."""

    name: str
    queues: tuple[str, ...]

    def __init__(self, name: str, queues: Sequence[str]) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise WorkerSpecError(f"worker name {name!r}: expected 1-128 letters, digits, '.', '_' or '-', "
                                  "starting with a letter or digit")
        if isinstance(queues, str) or not queues:
            raise WorkerSpecError(f"worker {name}: queues {queues!r}: expected a non-empty list of "
                                  f"{', '.join(QUEUES)}")
        unknown = [q for q in queues if q not in QUEUES]
        if unknown:
            raise WorkerSpecError(f"worker {name}: queue {unknown[0]!r}: expected one of {', '.join(QUEUES)}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "queues", tuple(dict.fromkeys(queues)))


def parse_specs(text: str) -> list[WorkerSpec]:
    """Parse ``"w1=cpu_queue,media_queue;w2=cpu_queue"`` into worker specs.

    Raises:
        WorkerSpecError: naming the part of ``text`` that is wrong and what was expected.
    """
    specs: list[WorkerSpec] = []
    parts = [part.strip() for part in text.split(";")]
    if not any(parts):
        raise WorkerSpecError(f"worker specs {text!r}: expected NAME=QUEUE[,QUEUE...] separated by ';'")
    for part in parts:
        if not part:
            continue  # a trailing ';' is harmless
        name, sep, queues = (piece.strip() for piece in part.partition("="))
        if not sep or not name or not queues:
            raise WorkerSpecError(f"worker spec {part!r} in {text!r}: expected NAME=QUEUE[,QUEUE...]")
        chosen = [q.strip() for q in queues.split(",")]
        if not all(chosen):
            raise WorkerSpecError(f"worker spec {part!r} in {text!r}: empty queue name; expected "
                                  "comma-separated queues")
        spec = WorkerSpec(name, chosen)
        if any(s.name == spec.name for s in specs):
            raise WorkerSpecError(f"worker spec {part!r} in {text!r}: worker {name!r} is named twice; "
                                  "expected unique names")
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class WorkerProcess:
    """A supervised worker as the supervisor sees it right now."""

    name: str
    queues: tuple[str, ...]
    pid: int                   # 0 while it is not running
    running: bool
    restarts: int              # restarts since the supervisor started
    uptime: float              # seconds since its current process started; 0 when not running
    last_exit: int | None      # exit code (negative: killed by that signal) of its last process
    restart_in: float | None   # seconds until it is started again, when it is waiting out a backoff
    restart_delay: float | None  # the whole backoff delay of that wait


@dataclass
class _Worker:
    spec: WorkerSpec
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0             # monotonic time the current process started
    restarts: int = 0
    backoff: float = BACKOFF_INITIAL_S
    restart_at: float | None = None  # monotonic time a crashed worker is due to start again
    delay: float = 0.0               # the backoff delay that restart_at was set with
    last_exit: int | None = None


class Supervisor:
    """Starts, restarts and stops this host's workers (see the module docstring).

    Parameters:
        site: the site id.
        data_dir: the site's data folder, where its ``site.json`` is.
        host: this host's id; every worker reports it with ``--host``.
        specs: the workers to run.
        python: the interpreter that runs ``-m cinefleet worker``.
        log_dir: where ``<name>.log`` and ``<name>.pid`` go; default ``DATA_DIR/agents/HOST``.
    """

    def __init__(self, site: str, data_dir: Path, host: str, specs: Sequence[WorkerSpec],
                 python: str = sys.executable, log_dir: Path | None = None, *,
                 backoff_initial: float = BACKOFF_INITIAL_S, backoff_max: float = BACKOFF_MAX_S,
                 stable_after: float = STABLE_AFTER_S, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        if not isinstance(host, str) or not _NAME.fullmatch(host):
            raise WorkerSpecError(f"host id {host!r}: expected 1-128 letters, digits, '.', '_' or '-', "
                                  "starting with a letter or digit")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise WorkerSpecError(f"worker names {names}: expected each name once")
        self.site, self.data_dir, self.host, self.python = site, Path(data_dir), host, python
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir / "agents" / host
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.stable_after, self.stop_timeout = stable_after, stop_timeout
        self._workers = [_Worker(spec, backoff=backoff_initial) for spec in specs]
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False

    def command(self, spec: WorkerSpec) -> list[str]:
        """The argument list that runs ``spec``."""
        return [self.python, "-m", "cinefleet", "worker", "--site", self.site, "--data-dir", str(self.data_dir),
                "--queues", ",".join(spec.queues), "--name", spec.name, "--host", self.host]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker (after stopping orphans a previous supervisor left running)."""
        with self._lock:
            if self._started:
                return
            self._started, self._stopping = True, False
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for worker in self._workers:
                self._stop_orphan(worker.spec)
                self._spawn(worker)

    def poll(self) -> list[str]:
        """Notice exited workers and start those whose backoff has passed; returns the names started."""
        started: list[str] = []
        with self._lock:
            if not self._started or self._stopping:
                return started
            now = time.monotonic()
            for worker in self._workers:
                if worker.process is not None and (code := worker.process.poll()) is not None:
                    self._exited(worker, code, now)
                if worker.process is None and worker.restart_at is not None and now >= worker.restart_at:
                    worker.restarts += 1
                    worker.restart_at = None
                    self._spawn(worker)
                    if worker.process is not None:
                        started.append(worker.spec.name)
        return started

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every worker, wait up to ``timeout`` s (default ``stop_timeout``), then SIGKILL the rest.

        A worker finishes its job in flight on SIGTERM, so a stop can take as long as that job;
        what is left at the deadline is killed with its whole process group.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        with self._lock:
            self._stopping = True  # poll() starts nothing from now on
            running = [(w.spec.name, w.process) for w in self._workers
                       if w.process is not None and w.process.poll() is None]
            for _, process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        # Wait without the lock, so status() keeps answering while the workers finish their jobs.
        deadline = time.monotonic() + timeout
        for name, process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s (pid %s) still running %g s after SIGTERM; killing it", name, process.pid,
                            timeout)
                # The leader is not reaped yet, so its pid still names this process group.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        with self._lock:
            for worker in self._workers:
                if worker.process is not None:
                    worker.last_exit = worker.process.poll()
                    worker.process = None
                worker.restart_at = None
                self._pidfile(worker.spec).unlink(missing_ok=True)
            self._started = False

    # -- health ------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """Name → pid of every worker whose process is running."""
        return {p.name: p.pid for p in self.status() if p.running}

    def status(self) -> list[WorkerProcess]:
        """A snapshot of every supervised worker, in spec order."""
        now = time.monotonic()
        with self._lock:
            snapshot = []
            for w in self._workers:
                running = w.process is not None and w.process.poll() is None
                snapshot.append(WorkerProcess(
                    name=w.spec.name, queues=w.spec.queues, pid=w.process.pid if running and w.process else 0,
                    running=running, restarts=w.restarts, uptime=now - w.started if running else 0.0,
                    last_exit=w.last_exit,
                    restart_in=max(0.0, w.restart_at - now) if w.restart_at is not None else None,
                    restart_delay=w.delay if w.restart_at is not None else None))
            return snapshot

    # -- internals ---------------------------------------------------------------------------

    def _pidfile(self, spec: WorkerSpec) -> Path:
        return self.log_dir / f"{spec.name}.pid"

    def _spawn(self, worker: _Worker) -> None:
        spec = worker.spec
        try:
            with (self.log_dir / f"{spec.name}.log").open("ab") as log_file:
                worker.process = subprocess.Popen(self.command(spec), stdin=subprocess.DEVNULL, stdout=log_file,
                                                  stderr=log_file, start_new_session=True, close_fds=True)
        except OSError as exc:
            log.error("worker %s could not start: %s", spec.name, exc)
            self._exited(worker, None, time.monotonic())
            return
        worker.started = time.monotonic()
        self._pidfile(spec).write_text(f"{worker.process.pid}\n")
        log.info("worker %s started (pid %s, queues %s)", spec.name, worker.process.pid, ",".join(spec.queues))

    def _exited(self, worker: _Worker, code: int | None, now: float) -> None:
        """Record an exit nobody asked for and schedule the restart after the backoff delay."""
        if worker.process is not None and now - worker.started >= self.stable_after:
            worker.backoff = self.backoff_initial
        worker.last_exit = code
        worker.process = None
        worker.restart_at, worker.delay = now + worker.backoff, worker.backoff
        log.warning("worker %s exited (code %s); starting it again in %.1f s", worker.spec.name, code, worker.backoff)
        worker.backoff = min(worker.backoff * 2, self.backoff_max)

    def _stop_orphan(self, spec: WorkerSpec) -> None:
        """Stop a worker a previous supervisor started under this name and left running."""
        pidfile = self._pidfile(spec)
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        pidfile.unlink(missing_ok=True)
        try:
            process = psutil.Process(pid)
            cmdline = process.cmdline()
        except (psutil.Error, OSError):
            return
        if not _is_worker(cmdline, self.site, spec.name):  # the pid was reused by something else
            return
        log.warning("stopping orphaned worker %s (pid %s) left by a previous agent", spec.name, pid)
        with contextlib.suppress(psutil.Error):
            process.terminate()
        if not _wait_gone(process, self.stop_timeout):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            if not _wait_gone(process, 10):
                log.error("orphaned worker %s (pid %s) survived SIGKILL; starting its replacement anyway",
                          spec.name, pid)


def _wait_gone(process: psutil.Process, timeout: float) -> bool:
    """Wait until ``process`` has exited; a zombie its new parent has not reaped yet counts as exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _is_worker(cmdline: list[str], site: str, name: str) -> bool:
    """Whether ``cmdline`` runs ``cinefleet worker`` for ``site`` under ``name``."""
    def flag(option: str) -> str | None:
        return cmdline[cmdline.index(option) + 1] if option in cmdline[:-1] else None

    return (cmdline[1:4] == ["-m", "cinefleet", "worker"] and flag("--site") == site and flag("--name") == name)
