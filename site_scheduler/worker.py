"""``cinefleet worker``: one dramatiq worker process running the pipeline's stages.

One stage at a time (one worker thread, prefetch 1), so a drain or a pause leaves nothing
parked in this process's memory. A heartbeat thread publishes the worker's status to Redis
every second; the same thread kills the running stage's subprocesses (ffmpeg, espeak-ng) when
its run is cancelled. Results go back to the scheduler through Redis, never the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import dramatiq
import redis
from dramatiq.middleware import Middleware, SkipMessage
from pydantic import ValidationError

from pipeline.errors import GateBlocked, PipelineError
from pipeline.media.ffmpeg import disk_full
from pipeline.media.processes import descendants as descendants  # the one process-tree walk, for the tests too
from pipeline.media.processes import kill_descendants
from pipeline.store import ArtifactStore, make_files_private
from site_scheduler.broker import make_broker
from site_scheduler.builds import build_free_queues, own_builds, refusal
from site_scheduler.config import DEFAULT_HEARTBEAT_TTL_S, SiteEndpoints
from site_scheduler.errors import SiteError
from site_scheduler.execute import RedisHints, run_stage
from site_scheduler.keys import Keys
from site_scheduler.messages import Heartbeat, ResultStatus, StagePayload, StageResult
from site_scheduler.status import WorkerStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_SECONDS = 0.5
#: A stage still running after this long is reported as started.
STARTED_AFTER_S = 0.05
#: How long a message this worker may not take waits before it is offered again.
DEFER_MS = 300
#: The longest wait between two tries at Redis while it does not answer (reporting, gating).
REDIS_BACKOFF_MAX_S = 2.0


class WorkerState:
    """What this worker is doing, shared by the actor, the middleware and the heartbeat."""

    def __init__(self, name: str, keys: Keys, client: redis.Redis, queues: list[str], host: str,
                 builds: dict[str, str] | None = None, refused: str | None = None,
                 heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S) -> None:
        self.name = name
        self.keys = keys
        self.redis = client
        self.queues = queues
        self.host = host
        self.builds = builds or {}  # its ffmpeg and espeak-ng builds, reported in every heartbeat
        self.builds_refused = refused  # why it takes no media work: its builds differ from the site's pinned ones
        self.current: StagePayload | None = None
        self.status = WorkerStatus.IDLE
        self.since = self.started_at = time.time()
        self.lock = threading.Lock()
        self.restarting = False
        self.beaten = time.monotonic()  # when a heartbeat last reached Redis
        self.abandoned: StagePayload | None = None  # the job given up because this worker went unseen
        self.stopping = threading.Event()  # set by SIGTERM/SIGINT: waiting for Redis ends
        self.heartbeat_ttl_s = heartbeat_ttl_s  # the site's (site.json): how long a heartbeat lives in Redis

    def unseen(self) -> bool:
        """True once no heartbeat has reached Redis for longer than its TTL.

        The site then counts this worker offline and may send its stage to another worker, so
        the work in hand is given up and no new work is taken until a heartbeat gets through.
        """
        return time.monotonic() - self.beaten > self.heartbeat_ttl_s

    def set_status(self, status: WorkerStatus) -> None:
        with self.lock:
            if status != self.status:
                self.status, self.since = status, time.time()

    def refused(self) -> str | None:
        """Why this worker must not start a new job now, if it must not."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.keys.drain(self.name))
        pipe.get(self.keys.host_state(self.host))
        draining, host_state = pipe.execute()
        return _refusal(bool(draining), host_state)

    def gate(self, payload: StagePayload, queue: str) -> str | None:
        """Before a message runs, in one round trip: "skip" (its run is cancelled or the attempt is
        stale, a redelivery of work sent again since), "defer" (not now), or None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.keys.cancelled(payload.run_id))
        pipe.hget(self.keys.attempts(payload.run_id), payload.stage_id)
        pipe.exists(self.keys.paused(queue))
        pipe.exists(self.keys.drain(self.name))
        pipe.get(self.keys.host_state(self.host))
        cancelled, latest, paused, draining, host_state = pipe.execute()
        if cancelled or (latest is not None and int(latest) > payload.attempt):
            return "skip"
        if paused or _refusal(bool(draining), host_state) or self.unseen():
            return "defer"
        return None

    def beat(self) -> None:
        with self.lock:
            job = self.current
            record = Heartbeat(name=self.name, host=self.host, pid=os.getpid(), status=self.status, queues=self.queues,
                               since=self.since, heartbeat=time.time(), started_at=self.started_at,
                               current_job=f"{job.run_id}/{job.stage_id}" if job else "", builds=self.builds,
                               refused=self.builds_refused or "")
        pipe = self.redis.pipeline()
        # redis-py's mapping type has an invariant key (str | bytes | ...), so no dict[str, ...] fits it.
        pipe.hset(self.keys.worker(self.name), mapping=record.to_hash())  # type: ignore[arg-type]
        pipe.pexpire(self.keys.worker(self.name), math.ceil(self.heartbeat_ttl_s * 1000))
        pipe.sadd(self.keys.workers, self.name)
        pipe.execute()
        self.beaten = time.monotonic()


class SiteControls(Middleware):
    """Before a message runs: skip it if its run is cancelled, hand it back if we may not take it."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        payload = _payload(message.kwargs)
        if payload is None:
            raise SkipMessage()
        verdict = _retrying(lambda: self.state.gate(payload, message.queue_name), self.state.stopping)
        if verdict == "defer":
            broker.enqueue(message.copy(), delay=DEFER_MS)
        if verdict is not None:
            raise SkipMessage()


def _retrying(call: Callable[[], T], stopping: threading.Event) -> T:
    """``call()``, tried again with a growing pause for as long as Redis raises (stalled, restarting, down).

    Used where giving up would lose something: a message whose gate raised would be dropped by
    dramatiq and its stage left queued forever; a result not reported would leave its stage
    running forever. Redis coming back is the only way on, so this waits for it, unless the
    worker is asked to stop: then the error is raised, since a worker that goes offline has its
    stages sent again by the site (and dramatiq redelivers its unacknowledged messages).
    """
    tries = 0
    while True:
        try:
            return call()
        except redis.exceptions.RedisError as error:
            if stopping.is_set():
                raise
            tries += 1
            if tries == 1 or tries % 30 == 0:
                log.warning("Redis does not answer (%s: %s); trying again", type(error).__name__, error)
            stopping.wait(min(REDIS_BACKOFF_MAX_S, 0.05 * tries))


def _refusal(draining: bool, host_state: bytes | None) -> str | None:
    if draining:
        return "draining"
    if host_state is not None and host_state.decode() != "healthy":
        return f"host {host_state.decode()}"
    return None


def _payload(kwargs: dict[str, Any]) -> StagePayload | None:
    """A stage message's payload, or None (logged) when it is malformed: such a message is skipped."""
    try:
        return StagePayload.model_validate(kwargs.get("payload"))
    except ValidationError as exc:
        log.warning("skipped a malformed stage message: %s", exc)
        return None


def make_handler(state: WorkerState, endpoints: SiteEndpoints) -> Any:
    def handle(payload: dict[str, Any]) -> None:
        job = _payload({"payload": payload})
        if job is None:
            return
        ids: dict[str, Any] = {"run_id": job.run_id, "stage_id": job.stage_id, "attempt": job.attempt,
                               "worker": state.name}
        with state.lock:
            state.current = job
        state.set_status(WorkerStatus.ACTIVE)
        # "started" is for stages that take a while (the site shows them running, a drain deadline
        # or a dead worker requeues them); one that finishes sooner goes straight to its result.
        started = threading.Timer(STARTED_AFTER_S, _report, (state, StageResult(**ids, status=ResultStatus.STARTED)))
        started.daemon = True
        started.start()
        began = time.monotonic()
        try:
            done = run_stage(Path(endpoints.store), endpoints.site_id, job.tenant_id, job.kind, dict(job.args),
                             RedisHints(state.redis, state.keys))
            result = StageResult(**ids, status=ResultStatus.DONE, seconds=round(time.monotonic() - began, 4), **done)
        except GateBlocked as blocked:
            result = StageResult(**ids, status=ResultStatus.BLOCKED, error=str(blocked),
                                 seconds=round(time.monotonic() - began, 4))
        except (PipelineError, OSError, ValueError, KeyError) as error:
            cancelled = _retrying(lambda: state.redis.exists(state.keys.cancelled(job.run_id)), state.stopping)
            status = ResultStatus.CANCELLED if cancelled else ResultStatus.FAILED
            if state.abandoned is job:  # killed because this worker went unseen, not because the stage failed
                status = ResultStatus.ABANDONED
            full = disk_full(error, Path(endpoints.store)) if isinstance(error, OSError) else None
            result = StageResult(**ids, status=status, error=full or f"{type(error).__name__}: {error}",
                                 seconds=round(time.monotonic() - began, 4))
        except Exception as error:  # a bug in a stage: report it rather than lose the stage
            result = StageResult(**ids, status=ResultStatus.FAILED,
                                 error="".join(traceback.format_exception_only(error)).strip())
        finally:
            started.cancel()
            with state.lock:
                state.current = None
                state.abandoned = None
            state.set_status(WorkerStatus.IDLE)
        _report(state, result)

    return handle


def _report(state: WorkerState, result: StageResult) -> None:
    """Hand a result to the scheduler; Redis stalled, restarting or down delays it, never loses it."""
    payload = result.encode()
    _retrying(lambda: state.redis.rpush(state.keys.results, payload), state.stopping)


def _watch(state: WorkerState, stop: threading.Event, halted: threading.Event) -> None:
    """Heartbeat, drain status, stopping abandoned or cancelled work, and asking for a restart.

    It beats until the worker has halted, not merely been asked to stop: a job still running
    through a graceful stop keeps its heartbeat, so it is not requeued as if its worker had died,
    and a cancellation can still kill its subprocesses. No Redis error ends it (a stall past the
    socket timeout raises ``TimeoutError``): it tries again next beat, and once its heartbeat has
    been missing longer than the TTL it gives up the job in hand (see :meth:`WorkerState.unseen`).
    """
    while not halted.is_set():
        try:
            _watch_once(state, stop)
        except redis.exceptions.RedisError as error:
            log.debug("heartbeat not sent: %s: %s", type(error).__name__, error)
        if state.unseen():
            _abandon(state)
        halted.wait(HEARTBEAT_SECONDS)


def _abandon(state: WorkerState) -> None:
    """Kill the job in hand's subprocesses: this worker is offline to the site, which may run it elsewhere."""
    with state.lock:
        job = state.current
        if job is None or state.abandoned is job:
            return
        state.abandoned = job
    log.warning("no heartbeat reached Redis for %s s: abandoning %s/%s attempt %s", state.heartbeat_ttl_s,
                job.run_id, job.stage_id, job.attempt)
    kill_descendants()


def _watch_once(state: WorkerState, stop: threading.Event) -> None:
    job = state.current
    if job and _must_stop(state, job):
        kill_descendants()
    if state.refused() == "draining":
        state.set_status(WorkerStatus.DRAINED if job is None else WorkerStatus.DRAINING)
        if job is None and not stop.is_set() and state.redis.exists(state.keys.restart(state.name)):
            state.restarting = True
            stop.set()  # the main thread stops consuming, then replaces this process
    elif state.status.draining:
        state.set_status(WorkerStatus.IDLE if job is None else WorkerStatus.ACTIVE)
    state.beat()


def _must_stop(state: WorkerState, job: StagePayload) -> bool:
    """The job's run was cancelled, or its stage was taken from this worker (drain deadline) or sent again."""
    pipe = state.redis.pipeline(transaction=False)
    pipe.exists(state.keys.cancelled(job.run_id))
    pipe.sismember(state.keys.abandon(state.name), f"{job.run_id}/{job.stage_id}/{job.attempt}")
    pipe.hget(state.keys.attempts(job.run_id), job.stage_id)
    cancelled, abandoned, latest = pipe.execute()
    return bool(cancelled or abandoned or (latest is not None and int(latest) > job.attempt))


def _restart(state: WorkerState) -> None:
    """Replace this process with a fresh one of the same command line (same pid, new interpreter).

    The worker has stopped consuming and requeued anything prefetched, so nothing is lost; the
    restart key goes first, so the new process does not restart again.
    """
    raw = state.redis.get(state.keys.restart(state.name))
    undrain = raw is None or json.loads(raw).get("undrain", True)
    pipe = state.redis.pipeline()
    pipe.delete(state.keys.restart(state.name), state.keys.abandon(state.name))
    if undrain:
        pipe.delete(state.keys.drain(state.name))
    pipe.execute()
    log.info("worker %s restarting as a fresh process", state.name)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def refuse_taken_name(state: WorkerState) -> None:
    """Refuse to start under a name a live worker on another host reports.

    A worker is known to the site, its agent and the operator by its name alone: a second
    process elsewhere reporting the same name would overwrite the first one's heartbeat, and a
    drain or restart meant for one would reach the other (issue 8). Another process on the same
    host may take the name over (an agent restarting its worker), so only the host is compared.
    """
    # redis-py types replies bytes | str; this client (no decode_responses) gets bytes.
    raw: dict[bytes, bytes] = state.redis.hgetall(state.keys.worker(state.name))  # type: ignore[assignment]
    beat = Heartbeat.from_hash(raw, state.keys.worker(state.name)) if raw else None
    if beat is not None and beat.host != state.host and beat.status != WorkerStatus.OFFLINE:
        raise SiteError(f"--name: value {state.name!r}: a live worker on host {beat.host!r} (pid {beat.pid}) "
                        f"already reports that name; expected a name no worker on another host uses")


def run_worker(endpoints: SiteEndpoints, queues: list[str], name: str, host: str | None = None) -> None:
    """Consume ``queues`` until SIGTERM/SIGINT (or a restart control).

    A worker whose ffmpeg or espeak-ng build differs from the site's pinned one consumes only
    the queues no build-dependent stage runs on, and says why in its heartbeat: its clips would
    not be the bytes their cache keys promise (``site_scheduler.builds``).
    """
    make_files_private()  # what it writes lands in the site's store and scratch folders
    ArtifactStore(Path(endpoints.store)).sweep_scratch()  # what a killed worker on this host left
    client = redis.Redis.from_url(endpoints.redis_url, socket_timeout=endpoints.redis_timeout_s)
    keys = Keys(endpoints.namespace)
    builds = own_builds()
    refused = refusal(builds, endpoints.builds)
    if refused is not None:
        queues = [queue for queue in queues if queue in build_free_queues()]
        log.warning("worker %s takes no media work: its %s; it consumes %s", name, refused,
                    ", ".join(queues) or "no queue")
    state = WorkerState(name, keys, client, queues, host or socket.gethostname(), builds, refused,
                        endpoints.heartbeat_ttl_s)
    refuse_taken_name(state)
    broker, _ = make_broker(endpoints.redis_url, endpoints.namespace, make_handler(state, endpoints),
                            middleware=[SiteControls(state)], socket_timeout=endpoints.redis_timeout_s)
    stop, halted = state.stopping, threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watcher = threading.Thread(target=_watch, args=(state, stop, halted), name="heartbeat", daemon=True)
    watcher.start()
    # With prefetch 1 the consumer backs off while its one job runs; worker_timeout caps that
    # back-off, so it is also the longest pause between finishing a job and fetching the next.
    # No queue left (its builds differ and it was given only build-dependent queues): no consumer at
    # all, since dramatiq reads an empty set of queues as every queue.
    worker = dramatiq.Worker(broker, queues=set(queues), worker_threads=1, worker_timeout=100) if queues else None
    if worker is not None:
        worker.queue_prefetch = 1  # nothing parked in memory: a pause or a drain takes effect at once
        worker.start()
    try:
        stop.wait()
    finally:
        if worker is not None:
            worker.stop(timeout=600_000)
        halted.set()
        watcher.join(timeout=5)
        if not state.restarting:
            state.set_status(WorkerStatus.OFFLINE)
            with contextlib.suppress(redis.exceptions.RedisError):
                state.beat()
        broker.close()
    if state.restarting:
        _restart(state)
