"""The site's shipper: pushes the outbox to the control plane, from the cursor the centre acknowledges.

A daemon thread of ``site serve --control ADDR`` with its own database connections: it only
reads the outbox (SQLite in WAL mode lets it read while the scheduler writes), so the scheduler
never waits for it and works exactly as without it while the centre is away. It sends bounded
batches (:data:`BATCH_EVENTS` events, about :data:`BATCH_BYTES`; while behind, it reads the next
batch while the centre applies the last), always from the seq the
centre last said it wants next: a gap or a duplicate answer simply moves it there, and a
restarted site or centre resumes from the centre's word, never from a position of its own.
While the centre does not answer it backs off, doubling up to :data:`BACKOFF_MAX_S`, with jitter
so that many sites coming back do not push in step. When idle it sends an empty batch every
:data:`HEARTBEAT_S`: the centre hears the site is alive.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import grpc
from sqlalchemy import Text, cast, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import InputError
from protos import replication_pb2 as pb
from protos import replication_pb2_grpc
from site_scheduler.tables import OutboxRow

log = logging.getLogger(__name__)

#: Events in one batch at most, and roughly the bytes of their rows.
BATCH_EVENTS = 2000
BATCH_BYTES = 4 * 1024 * 1024
#: Seconds between two looks at an outbox that had nothing new.
POLL_S = 0.2
#: Seconds between two empty pushes while nothing happens (the centre's sign of life).
HEARTBEAT_S = 5.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
#: Seconds one push may take before it counts as the centre being away.
PUSH_TIMEOUT_S = 30.0
#: The centre refused the batch or the site's token: no retry helps soon; try again this rarely.
REFUSED_RETRY_S = 60.0
_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
             grpc.StatusCode.UNAUTHENTICATED)


def read_token(path: Path) -> str:
    """The site's push token from ``path`` (what ``cinefleet control site add`` printed)."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise InputError(f"--control-token-file: {path}: cannot read ({exc.strerror}); expected the token "
                         "`cinefleet control site add SITE` printed") from None
    if not token:
        raise InputError(f"--control-token-file: {path}: empty; expected the token `cinefleet control site add` "
                         "printed")
    return token


class Shipper(threading.Thread):
    """Pushes ``engine``'s outbox to the centre at ``address`` until :meth:`stop`."""

    def __init__(self, site_id: str, engine: Engine, address: str, token: str) -> None:
        super().__init__(name="outbox-shipper", daemon=True)
        self.site_id, self.engine, self.address = site_id, engine, address
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._stop_event = threading.Event()
        #: The seq the centre wants next; None until it said so.
        self.next_seq: int | None = None
        self._ahead_reported = False
        #: The batch read while the previous one was in flight, by its first seq.
        self._prefetched: dict[int, tuple[list[pb.OutboxEvent], int]] = {}

    def run(self) -> None:
        channel = grpc.insecure_channel(self.address)
        stub = replication_pb2_grpc.ReplicationStub(channel)
        failures = 0
        idle_since = 0.0
        try:
            while not self._stop_event.is_set():
                try:
                    sent = self._step(stub, heartbeat=time.monotonic() - idle_since >= HEARTBEAT_S)
                except grpc.RpcError as exc:
                    failures += 1
                    self._wait_after(exc, failures)
                    continue
                except SQLAlchemyError as exc:  # the site's own database is away: the scheduler rides it out too
                    failures += 1
                    log.warning("the shipper cannot read the outbox (try %d): %s", failures,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    self._prefetched.clear()
                    self._stop_event.wait(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures - 1, 10)))
                    continue
                if failures:
                    log.info("the control plane at %s answers again; pushing from seq %s", self.address,
                             self.next_seq)
                failures = 0
                if sent is None:  # nothing new: look again soon
                    self._stop_event.wait(POLL_S)
                else:
                    idle_since = time.monotonic()
        finally:
            channel.close()

    def _step(self, stub: replication_pb2_grpc.ReplicationStub, heartbeat: bool) -> int | None:
        """One push; returns the events sent, or None when there was nothing to send."""
        if self.next_seq is None:
            self._push(stub, [], self._head())
            return 0
        prefetched = self._prefetched.pop(self.next_seq, None)
        events, head = prefetched if prefetched is not None else self._read(self.next_seq)
        self._prefetched.clear()
        if head < self.next_seq - 1 and not self._ahead_reported:
            log.error("the control plane has applied site %s's outbox up to seq %d, but the outbox ends at seq %d "
                      "(was the site database restored or replaced?); nothing more replicates until it reaches "
                      "seq %d", self.site_id, self.next_seq - 1, head, self.next_seq)
            self._ahead_reported = True
        if not events and not heartbeat:
            return None
        self._push(stub, events, head, prefetch=len(events) == BATCH_EVENTS)
        return len(events)

    def _push(self, stub: replication_pb2_grpc.ReplicationStub, events: list[pb.OutboxEvent], head: int,
              prefetch: bool = False) -> None:
        """Push one batch; with ``prefetch`` (a backlog), read the next batch while the centre applies this one."""
        call = stub.PushOutbox.future(pb.OutboxBatch(site_id=self.site_id, events=events, site_head=head),
                                      timeout=PUSH_TIMEOUT_S, metadata=self._metadata)
        if prefetch:
            following = events[-1].seq + 1
            self._prefetched[following] = self._read(following)  # outbox rows never change: safe to keep
        ack = call.result()
        if ack.result in (pb.PUSH_RESULT_GAP, pb.PUSH_RESULT_DUPLICATE):
            log.info("the control plane answered %s: it wants seq %d next (was pushing from %s)",
                     pb.PushResult.Name(ack.result), ack.next_seq, self.next_seq)
        self.next_seq = ack.next_seq

    def _head(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.max(OutboxRow.__table__.c.seq))).scalar() or 0

    def _read(self, first: int) -> tuple[list[pb.OutboxEvent], int]:
        """Up to a batch of events from ``first`` on, in seq order, and the outbox's newest seq."""
        events: list[pb.OutboxEvent] = []
        size = 0
        table = OutboxRow.__table__
        with self.engine.connect() as connection:  # Core rows, not ORM objects: a backlog is read fast
            head = connection.execute(select(func.max(table.c.seq))).scalar() or 0
            # The row's JSON as stored: sent as it is, never decoded and encoded again here.
            rows = connection.execute(select(table.c.seq, table.c.entity, table.c.key, table.c.op, table.c.tenant_id,
                                             table.c.committed_at, cast(table.c.row, Text).label("row_json"))
                                      .where(table.c.seq >= first).order_by(table.c.seq).limit(BATCH_EVENTS))
            for row in rows:
                data = row.row_json.encode()
                if events and size + len(data) > BATCH_BYTES:
                    break
                size += len(data)
                events.append(pb.OutboxEvent(seq=row.seq, entity=row.entity, key=[str(k) for k in row.key],
                                             op=row.op, row_json=data, tenant_id=row.tenant_id,
                                             committed_at=row.committed_at or 0.0))
        return events, head

    def _wait_after(self, exc: grpc.RpcError, failures: int) -> None:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code in _REFUSALS:
            log.error("the control plane refused site %s's push (%s: %s); trying again in %g s", self.site_id,
                      code.name if code else "?", details, REFUSED_RETRY_S)
            self._stop_event.wait(REFUSED_RETRY_S)
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures - 1, 10)) * random.uniform(0.5, 1.0)
        level = logging.WARNING if failures == 1 or failures % 20 == 0 else logging.DEBUG
        log.log(level, "the control plane at %s is unavailable (try %d: %s); the site carries on, next push in "
                "%.1f s", self.address, failures, code.name if code else details, delay)
        self._stop_event.wait(delay)

    def stop(self) -> None:
        self._stop_event.set()
