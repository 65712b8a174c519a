"""Replication on real processes: a site with a worker ships its outbox to a real centre over gRPC."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane import audit
from control_plane.fleet import Fleet, RunDetail
from control_plane.sites import add_site
from control_plane.tables import CostRow
from control_plane.testing import Centre
from protos import replication_pb2 as pb
from protos import replication_pb2_grpc
from site_scheduler.database import open_engine as open_site_engine
from site_scheduler.tables import OutboxRow
from site_scheduler.testing import Site
from tests.control_plane.digest import centre_digest, site_digest


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    """One centre for the module (its tests use different site ids)."""
    root = tmp_path_factory.mktemp("centre")
    with Centre(data_dir=root / "centre", logs=root / "logs", interval_s=0.5) as running:
        yield running


def _site(tmp_path: Path, centre: Centre, site_id: str = "t1") -> Site:
    data_dir = tmp_path / site_id
    data_dir.mkdir(mode=0o700)
    centre.add_site(site_id, data_dir / "control.token")
    return Site(data_dir=data_dir, logs=tmp_path / "logs", site_id=site_id, options=["--control", centre.address])


def _in_step(centre: Centre, site: Site) -> bool:
    """Has the centre applied the site's whole outbox, and do both hold the same rows?"""
    engine = open_site_engine(site.client.endpoints.db_url)
    try:
        with Session(engine) as session:
            head = session.scalar(select(func.max(OutboxRow.seq))) or 0
        with centre.fleet() as fleet:
            [view] = [s for s in fleet.sites() if s.site_id == site.site_id]
        return view.cursor == head and site_digest(engine) == centre_digest(centre.engine, site.site_id)
    finally:
        engine.dispose()


def test_runs_replicate_and_a_centre_outage_loses_and_doubles_nothing(tmp_path: Path, centre: Centre) -> None:
    with _site(tmp_path, centre) as site:
        site.start_worker("w1")
        first = site.client.submit_probe(3)
        assert site.wait(first, timeout=60)["status"] == "completed"
        at_site = site.run(first)

        def replicated(fleet: Fleet) -> RunDetail | None:
            run = fleet.run("t1", first)
            return run if run is not None and run.status == "completed" else None

        run = centre.wait_until(replicated, "the completed run at the centre", timeout=30)
        assert sorted((s.stage_id, s.status) for s in run.stages) == sorted(
            (s["stage_id"], s["status"]) for s in at_site["stages"])
        assert [c.stage_id for c in run.costs], "every finished attempt's cost reaches the centre"

        # The centre goes away; the site goes on working, unchanged.
        centre.stop()
        later = [site.client.submit_probe(2), site.client.submit_probe(4)]
        assert [site.wait(r, timeout=60)["status"] for r in later] == ["completed", "completed"]
        centre.start()  # same database, same address: the shipper resumes from the centre's cursor
        centre.wait_until(lambda _fleet: _in_step(centre, site), "the centre to catch up with the site", 60)
        with Session(centre.engine) as session, centre.fleet() as fleet:
            [view] = [s for s in fleet.sites() if s.site_id == "t1"]
            # Exactly once: as many applications as seqs, and each cost event (an insert) once.
            assert view.applied_total == view.cursor and view.connection == "connected"
            assert view.lag_s is not None and view.lag_s < 60
            site_engine = open_site_engine(site.client.endpoints.db_url)
            with Session(site_engine) as site_session:
                costs = site_session.scalar(select(func.count()).where(OutboxRow.entity == "cost"))
            site_engine.dispose()
            assert session.scalar(select(func.count()).select_from(CostRow)) == costs
            assert {r.run_id for r in fleet.runs(site_id="t1").items} == {first, *later}



def test_a_site_killed_while_it_ships_a_backlog_resumes_from_the_centres_cursor(tmp_path: Path,
                                                                                centre: Centre) -> None:
    """kill -9 of the scheduler (and its shipper) while the centre applies a backlog of more than one batch:
    the restarted site asks the centre where to resume, and every event is applied exactly once."""
    with _site(tmp_path, centre, "t3") as site:
        site.start_worker("w1")
        centre.stop()
        runs = [site.client.submit_probe(300) for _ in range(2)]  # ~4 events a stage: more than one batch
        assert [site.wait(r, timeout=120)["status"] for r in runs] == ["completed"] * 2
        centre.start()

        def first_batch(fleet: Fleet) -> int:
            return next((s.cursor for s in fleet.sites() if s.site_id == "t3" and s.cursor > 0), 0)

        centre.wait_until(first_batch, "the first batch of the backlog applied", 60)
        site.stop_scheduler(signal.SIGKILL)
        site.start_scheduler()
        centre.wait_until(lambda _fleet: _in_step(centre, site), "the centre to catch up with the restarted site", 90)
        with centre.fleet() as fleet:
            [view] = [s for s in fleet.sites() if s.site_id == "t3"]
            assert view.applied_total == view.cursor > 2000  # no event applied twice, none skipped
            assert {r.run_id for r in fleet.runs(site_id="t3").items} == set(runs)

def _push(stub: replication_pb2_grpc.ReplicationStub, site_id: str, token: str, seqs: range) -> pb.PushAck:
    events = [pb.OutboxEvent(seq=seq, entity="queue", key=["cpu_queue"], op="upsert", tenant_id="-",
                             row_json=json.dumps({"name": "cpu_queue", "site_id": site_id, "paused": False,
                                                  "completed": seq}).encode()) for seq in seqs]
    ack: pb.PushAck = stub.PushOutbox(pb.OutboxBatch(site_id=site_id, events=events), timeout=10,
                                      metadata=(("authorization", f"Bearer {token}"),))
    return ack


def test_gaps_and_duplicates_get_the_seq_wanted_next_and_a_forged_push_is_refused_and_recorded(
        tmp_path: Path, centre: Centre) -> None:
    mine, _ = add_site(centre.engine, "s1")
    add_site(centre.engine, "s2")
    with grpc.insecure_channel(centre.address) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        ack = _push(stub, "s1", mine, range(1, 4))
        assert (ack.result, ack.cursor, ack.next_seq, ack.applied) == (pb.PUSH_RESULT_APPLIED, 3, 4, 3)
        ack = _push(stub, "s1", mine, range(6, 8))
        assert (ack.result, ack.next_seq, ack.applied) == (pb.PUSH_RESULT_GAP, 4, 0)
        ack = _push(stub, "s1", mine, range(2, 4))
        assert (ack.result, ack.next_seq, ack.applied) == (pb.PUSH_RESULT_DUPLICATE, 4, 0)
        # s1's token pushing as s2: refused, nothing applied, the refusal recorded with whose token it was.
        with pytest.raises(grpc.RpcError) as refused:
            _push(stub, "s2", mine, range(1, 2))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "the token is site s1's, not site s2's" in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as anonymous:
            _push(stub, "s1", "", range(4, 5))
        assert anonymous.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A malformed batch: named, refused whole.
        with pytest.raises(grpc.RpcError) as malformed:
            stub.PushOutbox(pb.OutboxBatch(site_id="s1", events=[pb.OutboxEvent(seq=4, entity="queue", op="upsert",
                                                                                row_json=b"[1]")]),
                            timeout=10, metadata=(("authorization", f"Bearer {mine}"),))
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "event seq 4: row_json is list" in (malformed.value.details() or "")
    with Session(centre.engine) as session, centre.fleet() as fleet:
        cursors = {s.site_id: s.cursor for s in fleet.sites()}
        assert (cursors["s1"], cursors["s2"]) == (3, 0)
        refusals = audit.entries(session.connection(), kind="refused")
        assert [(r.actor, r.subject) for r in refusals] == [("site s1", "PushOutbox for site s2"),
                                                           ("anonymous", "PushOutbox for site s1")]
        assert refusals[1].detail["reason"] == "no token"
