"""Two ``control serve`` processes on one PostgreSQL: pushes for one site race through both, and each
event is still applied exactly once and in order (the site's row lock orders them)."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import grpc
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.sites import add_site
from control_plane.tables import CostRow, QueueRow, SiteRow
from control_plane.testing import Centre
from protos import replication_pb2 as pb
from protos import replication_pb2_grpc

EVENTS = 600
BATCH = 9


def _event(seq: int) -> pb.OutboxEvent:
    """Odd seqs count a queue's completions up (the last state must win), even seqs insert a cost."""
    if seq % 2:
        row = {"name": "cpu_queue", "site_id": "s1", "paused": False, "completed": seq}
        return pb.OutboxEvent(seq=seq, entity="queue", key=["cpu_queue"], op="upsert", tenant_id="-",
                              row_json=json.dumps(row).encode())
    row = {"run_id": "r1", "stage_id": "shot", "attempt": seq, "kind": "shot", "worker": "w1", "origin": "local",
           "provider": "local", "compute_seconds": 0.1, "usd": 0.0, "outcome": "done"}
    return pb.OutboxEvent(seq=seq, entity="cost", key=["r1", "shot", str(seq)], op="insert", tenant_id="acme",
                          row_json=json.dumps(row).encode(), committed_at=1.0)


def test_two_centres_on_one_postgresql_apply_each_event_once_and_in_order(tmp_path: Path, postgres_db: str) -> None:
    events = [_event(seq) for seq in range(1, EVENTS + 1)]
    with Centre(tmp_path / "a", tmp_path / "logs", db_url=postgres_db, name="centre-a") as a, \
            Centre(tmp_path / "b", tmp_path / "logs", db_url=postgres_db, name="centre-b") as b:
        token, _ = add_site(a.engine, "s1")
        applied: list[int] = []
        gaps: list[bool] = []
        problems: list[BaseException] = []

        def ship(address: str, seed: int) -> None:
            """A shipper that follows the acks, sometimes jumping ahead (a gap the centre must refuse)."""
            chance = random.Random(seed)
            try:
                with grpc.insecure_channel(address) as channel:
                    stub = replication_pb2_grpc.ReplicationStub(channel)
                    wanted = 1
                    while wanted <= EVENTS:
                        start = wanted + (3 if chance.random() < 0.1 else 0)
                        batch = events[start - 1:start - 1 + BATCH]
                        if not batch:
                            start, batch = wanted, events[wanted - 1:wanted - 1 + BATCH]
                        ack = stub.PushOutbox(pb.OutboxBatch(site_id="s1", events=batch), timeout=30,
                                              metadata=(("authorization", f"Bearer {token}"),))
                        if ack.result != pb.PUSH_RESULT_APPLIED:  # a gap or a duplicate: nothing applied
                            assert ack.applied == 0 and ack.result in (pb.PUSH_RESULT_GAP, pb.PUSH_RESULT_DUPLICATE)
                        gaps.append(ack.result == pb.PUSH_RESULT_GAP)
                        applied.append(ack.applied)
                        wanted = ack.next_seq
            except BaseException as exc:  # reported by the test thread
                problems.append(exc)

        threads = [threading.Thread(target=ship, args=(centre.address, seed)) for seed, centre in enumerate((a, b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not problems, problems
        with Session(a.engine) as session:
            site = session.get(SiteRow, "s1")
            assert site is not None and (site.cursor, site.applied_total) == (EVENTS, EVENTS)
            assert sum(applied) == EVENTS, "every event applied by exactly one of the two centres, once"
            assert any(gaps), "some pushes jumped ahead and were refused as gaps"
            assert session.scalar(select(func.count()).select_from(CostRow)) == EVENTS // 2
            queue = session.get(QueueRow, ("s1", "cpu_queue"))
            assert queue is not None and queue.completed == EVENTS - 1  # the last state, so applied in order
