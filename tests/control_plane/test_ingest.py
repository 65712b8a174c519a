"""Replication ingest on real fleet databases: SQLite and a PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.fleet import Fleet, QueryError
from control_plane.ingest import Batch, BatchRejected, Event, Ingest, Outcome
from control_plane.tables import CostRow, RunRow, StageRow


def run_event(seq: int, run_id: str, status: str, tenant: str = "acme", submitted_at: float = 100.0) -> Event:
    row = {"run_id": run_id, "site_id": "s1", "tenant_id": tenant, "project_path": "p.json", "project_hash": "ab" * 32,
           "out_dir": "/out", "status": status, "detail": "", "episode": None, "submitted_seq": seq,
           "submitted_at": submitted_at, "finished_at": None, "a_field_from_a_newer_site": 1}
    return Event(seq, "run", (run_id,), "upsert", row, tenant, committed_at=1000.0 + seq)


def cost_event(seq: int, run_id: str, attempt: int) -> Event:
    row: dict[str, Any] = {"run_id": run_id, "stage_id": "script", "attempt": attempt, "kind": "script", "worker": "w1",
           "origin": "local", "provider": "local", "compute_seconds": 0.5, "usd": 0.0, "outcome": "done"}
    return Event(seq, "cost", (run_id, "script", str(attempt)), "insert", row, "acme", committed_at=1000.0 + seq)


def stage_event(seq: int, run_id: str, stage_id: str, status: str) -> Event:
    row: dict[str, Any] = {"run_id": run_id, "stage_id": stage_id, "site_id": "s1", "tenant_id": "acme",
           "kind": "script",
           "queue": "cpu_queue", "identity": "i", "status": status, "depends_on": [], "args": {}, "output": None,
           "outputs": {}, "attempts": 1, "worker": None, "message_id": None, "error": ""}
    return Event(seq, "stage", (run_id, stage_id), "upsert", row, "acme")


@pytest.fixture(params=["sqlite", "postgresql"])
def ingest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ingest]:
    """The ingest over a fresh fleet database: SQLite, and a real PostgreSQL server."""
    url = sqlite_url(tmp_path / "fleet.db") if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    engine = open_engine(url)
    migrate(engine)
    clock = iter(float(t) for t in range(2000, 100000))
    yield Ingest(engine, clock=lambda: next(clock))
    engine.dispose()


def test_events_apply_in_order_once_and_the_answer_names_the_seq_wanted_next(ingest: Ingest) -> None:
    first = Batch("s1", [run_event(1, "r1", "queued"), stage_event(2, "r1", "script", "waiting"),
                         cost_event(3, "r1", 1)], site_head=9)
    ack = ingest.apply(first)
    assert (ack.outcome, ack.cursor, ack.applied, ack.next_seq) == (Outcome.APPLIED, 3, 3, 4)
    # The same batch again (a site that never saw the ack): nothing applied twice.
    again = ingest.apply(first)
    assert (again.outcome, again.cursor, again.applied) == (Outcome.DUPLICATE, 3, 0)
    # A batch that starts after a hole: nothing applied, the centre asks for 4.
    gap = ingest.apply(Batch("s1", [run_event(5, "r1", "failed")]))
    assert (gap.outcome, gap.next_seq, gap.applied) == (Outcome.GAP, 4, 0)
    # Overlapping: 3 is skipped, 4 and 5 applied in order (the last state of r1 wins).
    ack = ingest.apply(Batch("s1", [cost_event(3, "r1", 1), run_event(4, "r1", "running"),
                                    run_event(5, "r1", "completed")]))
    assert (ack.outcome, ack.cursor, ack.applied) == (Outcome.APPLIED, 5, 2)
    with Session(ingest.engine) as session:
        assert session.get(RunRow, ("s1", "r1")).status == "completed"  # type: ignore[union-attr]
        assert session.query(CostRow).count() == 1
        assert session.get(StageRow, ("s1", "r1", "script")) is not None
        fleet = Fleet(session, now=2005.0)
        [site] = fleet.sites()
        assert (site.cursor, site.applied_total, site.site_head, site.backlog) == (5, 5, 9, 4)
        assert site.lag_s is not None and site.lag_s > 0
        summary = fleet.summary()
        assert (summary.runs, summary.sites, summary.queues) == ({"completed": 1}, {"connected": 1}, 0)
        assert fleet.summary(scope=["other"]).runs == {}
        detail = fleet.run("s1", "r1")
        assert detail is not None and [s.stage_id for s in detail.stages] == ["script"] and len(detail.costs) == 1
        assert fleet.run("s1", "r1", scope=["other"]) is None


def test_a_malformed_batch_is_refused_whole_naming_what_is_wrong(ingest: Ingest) -> None:
    with pytest.raises(BatchRejected, match="seq 3 follows seq 1"):
        ingest.apply(Batch("s1", [run_event(1, "r1", "queued"), run_event(3, "r1", "failed")]))
    broken = run_event(1, "r1", "queued")
    del broken.row["status"]
    with pytest.raises(BatchRejected, match="seq 1 \\(run\\): field 'status' is missing"):
        ingest.apply(Batch("s1", [broken]))
    assert ingest.cursor("s1") == 0  # nothing written: not even the site row
    with Session(ingest.engine) as session:
        assert session.query(RunRow).count() == 0


def test_runs_page_by_keyset_with_filters_and_tenant_scope(ingest: Ingest) -> None:
    events = [run_event(i, f"r{i:03d}", "completed" if i % 2 else "failed", tenant="acme" if i % 3 else "zeta",
                        submitted_at=float(i // 2)) for i in range(1, 41)]
    ingest.apply(Batch("s1", events))
    with Session(ingest.engine) as session:
        fleet = Fleet(session)
        seen: list[str] = []
        after = None
        while True:
            page = fleet.runs(scope=["acme"], limit=7, after=after)
            seen += [r.run_id for r in page.items]
            if page.next is None:
                break
            after = page.next
        expected = sorted((e for e in events if e.tenant_id == "acme"),
                          key=lambda e: (e.row["submitted_at"], e.row["run_id"]), reverse=True)
        assert seen == [e.row["run_id"] for e in expected]
        failed = fleet.runs(status=["failed"], submitted_from=5.0, submitted_to=10.0)
        assert {r.run_id for r in failed.items} == {f"r{i:03d}" for i in range(10, 20, 2)}
        with pytest.raises(QueryError, match="cursor: value 'garbage'"):
            fleet.runs(after="garbage")
