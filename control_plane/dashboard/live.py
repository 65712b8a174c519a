"""Live updates over server-sent events: one publisher per process, one database read per tick.

Why one publisher: a page per viewer polling the database would multiply the load by the number of
open tabs (an incident brings everyone to the fleet page at once). Here each viewer subscribes to a
topic (the fleet summary for its tenant scope, or one run); once per tick the publisher reads every
topic somebody is watching, in one session, and hands each subscriber the latest value when it
changed. A slow viewer only ever holds the newest value (its queue has room for one). With no
subscriber the publisher stops; the next one starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from control_plane.errors import ControlInputError, NotFound
from control_plane.fleet import Fleet, Liveness, RunDetail
from control_plane.people import Principal

#: Seconds between two reads of the database.
TICK_S = 2.0
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: Tells the browser how long to wait before reconnecting a dropped stream (milliseconds).
RETRY_MS = 5000
LIVE_RUN = ("queued", "running")
log = logging.getLogger(__name__)
#: A topic: ("fleet", tenant scope) or ("run", site, run id).
Topic = tuple[Hashable, ...]


@dataclass(eq=False)
class Subscriber:
    topic: Topic
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    last: dict[str, Any] | None = None

    def offer(self, value: dict[str, Any]) -> None:
        """Hand over ``value`` if it differs from the last one; a value the viewer has not taken yet is replaced."""
        if value == self.last:
            return
        self.last = value
        with contextlib.suppress(asyncio.QueueEmpty):
            self.queue.get_nowait()
        self.queue.put_nowait(value)


def fleet_figures(fleet: Fleet, scope: list[str] | None) -> dict[str, Any]:
    """The fleet page's live numbers, keyed as its ``data-live`` attributes name them."""
    summary = fleet.summary(scope)
    figures: dict[str, Any] = {"queues": summary.queues, "queues_paused": summary.queues_paused,
                               "max_lag_s": None if summary.max_lag_s is None else round(summary.max_lag_s, 1),
                               "events_per_s": round(summary.events_per_s, 1),
                               "in_flight": sum(summary.runs.get(s, 0) for s in LIVE_RUN)}
    for group in ("sites", "hosts", "workers", "runs"):
        figures.update({f"{group}.{k}": n for k, n in getattr(summary, group).items()})
    return figures


def run_version(run: RunDetail) -> str:
    """Changes whenever the run or any stage of it does: the run page reloads when it differs from its own."""
    marks = [run.status, run.updated_at, *((s.stage_id, s.status, s.updated_at) for s in run.stages)]
    return hashlib.sha256(json.dumps(marks).encode()).hexdigest()[:16]


def run_figures(fleet: Fleet, site_id: str, run_id: str) -> dict[str, Any]:
    run = fleet.run(site_id, run_id)
    return {"status": "gone", "version": ""} if run is None else {"status": run.status, "version": run_version(run)}


class Publisher:
    """Reads what the subscribers watch once per tick and fans it out; ``reads`` counts the ticks that read."""

    def __init__(self, engine: Engine, liveness: Liveness, tick_s: float = TICK_S) -> None:
        self.engine, self.liveness, self.tick_s = engine, liveness, tick_s
        self.subscribers: set[Subscriber] = set()
        #: The last tick's values: a new viewer of a watched topic gets them at once, without a read.
        self.latest: dict[Topic, dict[str, Any]] = {}
        self.reads = 0
        self._task: asyncio.Task[None] | None = None
        #: Set when a viewer asks for a topic the last tick did not read: the next read comes at once.
        self._wake = asyncio.Event()

    def read(self, topics: set[Topic]) -> dict[Topic, dict[str, Any]]:
        """Every watched topic from one session (the whole tick's database work)."""
        self.reads += 1
        with Session(self.engine) as session:
            fleet = Fleet(session, self.liveness)
            return {topic: fleet_figures(fleet, None if topic[1] is None else list(topic[1]))  # type: ignore[call-overload]
                    if topic[0] == "fleet" else run_figures(fleet, str(topic[1]), str(topic[2])) for topic in topics}

    async def _run(self) -> None:
        try:
            while self.subscribers:
                try:
                    values = await run_in_threadpool(self.read, {s.topic for s in self.subscribers})
                except (OperationalError, InterfaceError) as exc:  # the database is away: viewers keep the last
                    log.warning("dashboard live updates: the fleet database is unreachable: %s", exc)
                    values = {}
                else:
                    self.latest = values
                for subscriber in list(self.subscribers):
                    if subscriber.topic in values:
                        subscriber.offer(values[subscriber.topic])
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.tick_s)
        finally:
            if self._task is asyncio.current_task():  # not replaced by a newer publisher meanwhile
                self._task, self.latest = None, {}

    def _join(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if subscriber.topic in self.latest:
            subscriber.offer(self.latest[subscriber.topic])
        else:
            self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _leave(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers and self._task is not None:
            self._task.cancel()  # nobody watches: stop now rather than after the tick
            self._task, self.latest = None, {}

    def _topic(self, request: Request, principal: Principal) -> Topic:
        """The topic asked for, checked against what the viewer may see (another tenant's run: not found)."""
        scope = None if principal.tenants is None else tuple(sorted(principal.tenants))
        wanted = request.query_params.get("run")
        if wanted is None:
            return ("fleet", scope)
        site_id, sep, run_id = wanted.partition("/")
        if not sep or not site_id or not run_id or len(wanted) > 160:
            raise ControlInputError(f"run: value {wanted[:80]!r}: expected SITE/RUN")
        with Session(self.engine) as session:
            if Fleet(session, self.liveness).run(site_id, run_id, None if scope is None else list(scope)) is None:
                raise NotFound(f"run {run_id!r}: no such run at site {site_id!r}")
        return ("run", site_id, run_id)

    async def stream(self, request: Request, principal: Principal) -> StreamingResponse:
        """The event stream of one viewer: ``event: fleet`` or ``event: run`` with JSON data, when it changes."""
        topic = await run_in_threadpool(self._topic, request, principal)
        subscriber = Subscriber(topic)

        async def events() -> AsyncIterator[str]:
            self._join(subscriber)  # here, not before: the generator's finally is what removes it
            try:
                yield f"retry: {RETRY_MS}\n\n"
                while True:
                    try:
                        value = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    yield f"event: {topic[0]}\ndata: {json.dumps(value, sort_keys=True)}\n\n"
            finally:
                self._leave(subscriber)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
