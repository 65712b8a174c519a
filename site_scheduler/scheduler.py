"""The site scheduler: the site database's only writer, advancing each run's stage graph.

Everything reaches it through Redis lists: submissions from ``cinefleet submit``, results from
workers, operator controls from the ``cinefleet site`` commands. Each change it makes is one
transaction that also appends to the outbox. The concepts live in their own modules, composed
here: :mod:`~site_scheduler.intake` (taking requests, creating runs), :mod:`~site_scheduler.graph`
(a run's stages as rows), :mod:`~site_scheduler.dispatch` (sending ready stages),
:mod:`~site_scheduler.results` (what workers report), :mod:`~site_scheduler.liveness` (worker
heartbeats) and :mod:`~site_scheduler.control_requests` (operator controls).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.workspace import Workspace
from site_scheduler import outbox
from site_scheduler.broker import make_broker
from site_scheduler.config import SiteEndpoints
from site_scheduler.context import SiteContext
from site_scheduler.control_requests import handle_control
from site_scheduler.dispatch import Dispatcher
from site_scheduler.graph import RunGraph
from site_scheduler.intake import Intake
from site_scheduler.keys import QUEUES
from site_scheduler.liveness import Liveness, drain_until
from site_scheduler.messages import Control, Submission
from site_scheduler.redis_server import RedisServer
from site_scheduler.results import DATABASE_OUTAGES, Results
from site_scheduler.status import LIVE_RUN, StageStatus, WorkerStatus
from site_scheduler.tables import HostRow, QueueRow, RunRow, StageRow, WorkerRow

__all__ = ["Scheduler", "drain_until"]

log = logging.getLogger(__name__)

#: Most controls, then submissions, taken in one step before results get their turn.
TAKE_PER_STEP = 50
#: The longest wait between two tries while Redis or the database does not answer.
OUTAGE_BACKOFF_MAX_S = 5.0
#: What Redis or the database raise while stalled, restarting or unreachable: the scheduler waits
#: them out. A Redis stall over redis-py's socket timeout raises ``TimeoutError``, not
#: ``ConnectionError``; a PostgreSQL restart or a SQLite lock past its busy timeout raise
#: ``OperationalError``; every one of them is an outage to ride out, never a reason to exit.
OUTAGES = (redis.exceptions.RedisError, *DATABASE_OUTAGES)


class Scheduler:
    def __init__(self, endpoints: SiteEndpoints, engine: Engine) -> None:
        self.site = SiteContext(endpoints, engine)
        self.endpoints, self.site_id, self.engine = endpoints, endpoints.site_id, engine
        self.redis, self.keys = self.site.redis, self.site.keys
        self.broker, self.actors = make_broker(endpoints.redis_url, endpoints.namespace,
                                               socket_timeout=endpoints.redis_timeout_s)
        self.graph = RunGraph(self.site)
        self.intake = Intake(self.site, self.graph)
        self.dispatcher = Dispatcher(self.site, self.graph, self.actors, self.broker.enqueue_all)
        self.results = Results(self.site, self.graph, self.dispatcher)
        self.liveness = Liveness(self.site)
        with Session(engine) as session, session.begin():
            for queue in QUEUES:
                if session.get(QueueRow, queue) is None:
                    row = QueueRow(name=queue, site_id=self.site_id, paused=False, completed=0)
                    session.add(row)
                    outbox.append(session, "queue", row, site_id=self.site_id, tenant_id="-")

    def workspace(self, tenant_id: str) -> Workspace:
        return self.site.workspace(tenant_id)

    def _emit(self, session: Session, entity: str, row: Any) -> int:
        """The outbox append the operator controls use."""
        return self.site.emit(session, entity, row)

    # -- the loop --------------------------------------------------------------------------

    def run_forever(self, stop: Any, supervise: RedisServer | None = None) -> None:
        """Schedule until ``stop`` is set; ride out Redis and database outages, restarting the site's own Redis."""
        recovered = False
        failures = 0
        while not stop.is_set():
            try:
                if not recovered:
                    self.recover()
                    while self.dispatcher.dispatch():  # stages a previous scheduler left ready
                        pass
                    recovered = True
                if not self.step():
                    self.results.wait()
                if self.site.health.state.get("status") != "ok":
                    if failures:
                        log.warning("the site's Redis and database answer again after %d failed tries", failures)
                    failures = 0
                    self.site.health.ok()
            except OUTAGES as error:
                # What was moved to a processing list before the error goes back on recovery; a
                # database transaction that failed was rolled back, its items still in Redis.
                recovered = False
                failures += 1
                what = "redis" if isinstance(error, redis.exceptions.RedisError) else "database"
                level = logging.WARNING if failures == 1 or failures % 20 == 0 else logging.DEBUG
                log.log(level, "the site's %s is unavailable (try %d, retrying): %s: %s", what, failures,
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
                self.site.health.down(what, error)
                if what == "database":
                    self.engine.dispose()  # reconnect: a restarted server invalidated every pooled connection
                if supervise is not None and not supervise.alive():
                    log.warning("the site's redis-server died; restarting it on port %s", supervise.port)
                    supervise.restart()
                stop.wait(min(OUTAGE_BACKOFF_MAX_S, 0.2 * failures))

    def step(self) -> bool:
        """Handle whatever is waiting; returns True when something was done."""
        busy = self.liveness.sync() if self.liveness.due() else False
        for _ in range(TAKE_PER_STEP):
            if not self.intake.take(self.keys.controls, Control, lambda control: handle_control(self, control)):
                break
            busy = True
        for _ in range(TAKE_PER_STEP):
            if not self.intake.take(self.keys.submissions, Submission, self.intake.submit):
                break
            busy = True
        busy = self.results.take() or busy
        if not busy:
            return False  # nothing changed since the last dispatch: nothing new can be ready
        while self.dispatcher.dispatch():  # a stage finished from the cache may free others
            pass
        return True

    def recover(self) -> None:
        """On start-up (or after losing Redis), put back what was taken but not finished.

        Items a previous scheduler moved to a processing list go back to their list. Stages it
        marked queued may have no message (a crash between the commit and the enqueue, or a
        Redis that lost its data): they go back to waiting and are sent again as new attempts;
        any old message left of them is then stale and skipped by the worker that receives it.
        """
        self.intake.put_back()
        self.reassert_controls()
        with Session(self.engine) as session, session.begin():
            live = select(RunRow.run_id).where(RunRow.status.in_(LIVE_RUN))
            for stage in session.scalars(select(StageRow).where(StageRow.status == StageStatus.QUEUED,
                                                                StageRow.run_id.in_(live))):
                stage.status = StageStatus.WAITING
                self.site.emit(session, "stage", stage)

    def reassert_controls(self) -> None:
        """Put back the Redis keys workers obey that the site database records: drains, host marks, pauses.

        A Redis that restarted without its data would otherwise undo them silently (a drained
        worker taking work, an offline host's workers too), and the next heartbeat sync would
        even record the undo. Keys still present are left alone (``NX``). A drain put back keeps
        the deadline the database recorded with it (one without a deadline waits for its work).
        """
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        with Session(self.engine) as session:
            for host in session.scalars(select(HostRow)):
                pipe.set(keys.host_state(host.host), host.state, nx=True)
            for worker in session.scalars(select(WorkerRow).where(
                    WorkerRow.status.in_((WorkerStatus.DRAINING, WorkerStatus.DRAINED)))):
                drain = {"reasserted": time.time()}
                if worker.drain_until is not None:
                    drain["until"] = worker.drain_until
                pipe.set(keys.drain(worker.name), json.dumps(drain), nx=True)
            for queue in session.scalars(select(QueueRow).where(QueueRow.paused)):
                pipe.set(keys.paused(queue.name), "1", nx=True)
        pipe.execute()
