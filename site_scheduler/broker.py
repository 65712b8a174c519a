"""The site's dramatiq broker and its stage actors, one per queue.

Scheduler and workers declare the same actors on a broker namespaced by the site id; only
workers run them. Actors never retry on their own (``max_retries=0``): whether a failed stage
runs again is the scheduler's decision (``retry-stage``), so a stage's attempts are counted in
one place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware

from site_scheduler.config import DEFAULT_REDIS_TIMEOUT_S
from site_scheduler.keys import QUEUES

#: A worker gives up a dead peer's messages after this long without a heartbeat.
HEARTBEAT_TIMEOUT_MS = 15_000

Handler = Callable[[dict[str, Any]], None]


class PromptConsumer(_RedisConsumer):
    """Fetches the next message the moment the one in hand is acknowledged.

    dramatiq's Redis consumer sleeps with a growing back-off (up to the worker timeout) while
    its prefetch is full; with the prefetch of 1 a site worker uses, that puts up to 100 ms
    between a finished stage and the next. Here the worker thread's ack wakes the consumer.
    Written against dramatiq 2.2.1's consumer (pinned); the site tests exercise it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._freed = threading.Event()

    def ack(self, message: Any) -> None:
        try:
            super().ack(message)
        finally:
            self._freed.set()

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)
        finally:
            self._freed.set()

    def __next__(self) -> Any:
        if not self.message_cache and self.outstanding_message_count >= self.prefetch:
            self._freed.wait(self.timeout / 1000)
            self._freed.clear()
            return None  # the consumer thread handles its acks and delays, then asks again
        return super().__next__()


class SiteBroker(RedisBroker):
    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return PromptConsumer

    def enqueue_all(self, messages: list[dramatiq.Message]) -> None:
        """Enqueue many messages in one round trip to Redis.

        The scheduler sends a dispatch's stages together; one ``enqueue`` each cost a round trip
        per stage. This runs dramatiq's own ``dispatch`` script (the same arguments
        ``RedisBroker.enqueue`` gives it, dramatiq 2.2.1) once per message inside a pipeline,
        with the enqueue middleware hooks around it.
        """
        pipe = self.client.pipeline(transaction=False)
        ready = []
        for message in messages:
            message = message.copy(options={"redis_message_id": str(uuid4())})
            self.emit_before("enqueue", message, None)
            self.scripts["dispatch"](keys=[self.namespace], client=pipe, args=[
                "enqueue", current_millis(), message.queue_name, self.broker_id, self.heartbeat_timeout,
                self.dead_message_ttl, self._should_do_maintenance("enqueue"), self._max_unpack_size(),
                message.options["redis_message_id"], message.encode(),
            ])
            ready.append(message)
        pipe.execute()
        for message in ready:
            self.emit_after("enqueue", message, None)


def actor_name(queue: str) -> str:
    return f"stage_{queue}"


def make_broker(url: str, namespace: str, handler: Handler | None = None,
                middleware: list[Middleware] | None = None,
                socket_timeout: float = DEFAULT_REDIS_TIMEOUT_S) -> tuple[SiteBroker, dict[str, dramatiq.Actor]]:
    # A client of our own, not ``url=``: dramatiq builds a pool from a URL alone, with redis-py's default timeout.
    client = redis.Redis.from_url(url, socket_timeout=socket_timeout)
    broker = SiteBroker(client=client, namespace=namespace, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                         maintenance_chance=10_000)
    for extra in middleware or ():
        broker.add_middleware(extra)

    def refuse(payload: dict[str, Any]) -> None:
        raise RuntimeError("stage actors run only in `cinefleet worker`")

    actors = {
        queue: dramatiq.actor(actor_name=actor_name(queue), queue_name=queue, broker=broker,
                              max_retries=0, time_limit=float("inf"))(handler or refuse)
        for queue in QUEUES
    }
    return broker, actors
