"""The site's dramatiq broker and its stage actors, one per queue.

Scheduler and workers declare the same actors on a broker namespaced by the site id; only
workers run them. Actors never retry on their own (``max_retries=0``): whether a failed stage
runs again is the scheduler's decision (``retry-stage``), so a stage's attempts are counted in
one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from site_scheduler.keys import QUEUES

#: A worker gives up a dead peer's messages after this long without a heartbeat.
HEARTBEAT_TIMEOUT_MS = 15_000

Handler = Callable[[dict[str, Any]], None]


def actor_name(queue: str) -> str:
    return f"stage_{queue}"


def make_broker(url: str, namespace: str, handler: Handler | None = None,
                middleware: list[Middleware] | None = None) -> tuple[RedisBroker, dict[str, dramatiq.Actor]]:
    broker = RedisBroker(url=url, namespace=namespace, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                         maintenance_chance=10_000)
    for extra in middleware or ():
        broker.add_middleware(extra)

    def refuse(payload: dict[str, Any]) -> None:
        raise RuntimeError("stage actors run only in `cinefleet worker`")

    actors = {
        queue: dramatiq.actor(handler or refuse, actor_name=actor_name(queue), queue_name=queue, broker=broker,
                              max_retries=0, time_limit=float("inf"))
        for queue in QUEUES
    }
    return broker, actors
