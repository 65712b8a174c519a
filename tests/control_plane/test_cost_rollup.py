"""The cost days (per run and UTC day) the ingest keeps equal the raw cost rows after replays,
duplicates and deletes, on SQLite and a real PostgreSQL; the migration backfills existing costs;
the cost page's report, read from them, matches sums over the raw rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane import costs
from control_plane.database import MIGRATIONS, migrate, open_engine, sqlite_url
from control_plane.ingest import Batch, Event, Ingest, Outcome
from control_plane.tables import CostDayRow, CostRow

DAY = 86_400.0
#: Noon of a UTC day: the report's "now" in these tests.
NOW = 20_000 * DAY + DAY / 2


def cost(seq: int, run_id: str, stage: str, attempt: int, seconds: float, at: float, tenant: str = "acme",
         op: str = "insert") -> Event:
    row: dict[str, Any] = {"run_id": run_id, "stage_id": stage, "attempt": attempt, "kind": "render", "worker": "w1",
                           "origin": "local", "provider": "local", "compute_seconds": seconds, "usd": seconds / 1000,
                           "outcome": "done"}
    return Event(seq, "cost", (run_id, stage, str(attempt)), op, row, tenant, committed_at=at)


def run(seq: int, run_id: str, tenant: str = "acme") -> Event:
    row = {"run_id": run_id, "tenant_id": tenant, "project_path": f"{run_id[0]}.json", "project_hash": "ab" * 32,
           "out_dir": "/out", "status": "completed", "detail": "", "episode": None, "submitted_seq": seq,
           "submitted_at": NOW - DAY, "finished_at": None}
    return Event(seq, "run", (run_id,), "upsert", row, tenant, committed_at=NOW - DAY)


def raw_days(engine: Engine) -> dict[tuple[str, str, int], tuple[int, float, float]]:
    """Sums of the raw cost rows per site, run and UTC day, computed here in Python."""
    sums: dict[tuple[str, str, int], tuple[int, float, float]] = {}
    with Session(engine) as session:
        for row in session.scalars(select(CostRow)):
            assert row.committed_at is not None
            key = (row.site_id, row.run_id, int(row.committed_at // DAY))
            n, seconds, usd = sums.get(key, (0, 0.0, 0.0))
            sums[key] = (n + 1, seconds + (row.compute_seconds or 0.0), usd + row.usd)
    return sums


def rolled_up(engine: Engine) -> dict[tuple[str, str, int], tuple[int, float, float]]:
    with Session(engine) as session:
        return {(r.site_id, r.run_id, r.day): (r.attempts, r.compute_s, r.usd)
                for r in session.scalars(select(CostDayRow))}


def assert_equal(engine: Engine) -> None:
    raw, rolled = raw_days(engine), rolled_up(engine)
    assert raw, "the test made no costs"
    assert rolled.keys() == raw.keys()
    for key, (n, seconds, usd) in raw.items():
        assert rolled[key][0] == n, key
        assert rolled[key][1:] == pytest.approx((seconds, usd), rel=1e-12), key


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = sqlite_url(tmp_path / "fleet.db") if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    opened = open_engine(url)
    migrate(opened)
    yield opened
    opened.dispose()


def test_the_cost_days_equal_the_raw_rows_after_replays_duplicates_and_deletes(engine: Engine) -> None:
    ingest = Ingest(engine, clock=lambda: NOW)
    late = 20_000 * DAY - 1.0  # the last second of yesterday: another UTC day than the next attempt
    first = Batch("s1", [run(1, "a1"), cost(2, "a1", "shot:1", 1, 10.0, late), cost(3, "a1", "shot:1", 2, 4.0, NOW),
                         cost(4, "a1", "shot:2", 1, 2.5, NOW)])
    assert ingest.apply(first).outcome == Outcome.APPLIED
    assert_equal(engine)
    assert len(rolled_up(engine)) == 2  # two days of one run
    before = rolled_up(engine)
    assert ingest.apply(first).outcome == Outcome.DUPLICATE  # a site that never saw the ack
    assert rolled_up(engine) == before
    # Overlapping (2 to 4 again, then new seqs); one key sent twice in a batch and again as a
    # replayed insert of an existing row: each attempt still counts once.
    overlap = Batch("s1", [*first.events[1:], cost(5, "a1", "shot:3", 1, 1.0, NOW),
                           cost(6, "a1", "shot:3", 1, 1.0, NOW),
                           cost(7, "a1", "shot:2", 1, 2.5, NOW), run(8, "b1"), cost(9, "b1", "shot:1", 1, 7.0, NOW)])
    assert ingest.apply(overlap).applied == 5
    assert_equal(engine)
    assert rolled_up(engine)[("s1", "a1", 20_000)][0] == 3
    # Another site's run of the same name is its own row; a deleted attempt leaves the sums.
    assert ingest.apply(Batch("s2", [run(1, "a1", "beta"), cost(2, "a1", "shot:1", 1, 3.0, NOW, "beta")])).applied == 2
    assert ingest.apply(Batch("s1", [cost(10, "b1", "shot:1", 1, 7.0, NOW, op="delete")])).applied == 1
    assert_equal(engine)
    assert ("s1", "b1", 20_000) not in rolled_up(engine)
    with Session(engine) as session:
        shown = costs.report(session, NOW, days=2)
        assert shown.attempts == session.scalar(select(func.count()).select_from(CostRow)) == 5
        assert shown.total_compute_s == pytest.approx(10.0 + 4.0 + 2.5 + 1.0 + 3.0)
        assert {d.key: d.compute_s for d in shown.per_day} == pytest.approx({"2024-10-03": 10.0,
                                                                             "2024-10-04": 4.0 + 2.5 + 1.0 + 3.0})
        assert costs.report(session, NOW, days=1).total_compute_s == pytest.approx(10.5)
        scoped = costs.report(session, NOW, days=2, scope=["beta"])
        assert [(line.key, line.compute_s) for line in scoped.runs] == [("s2/a1", 3.0)]
        assert costs.report(session, NOW, days=2, site_id="s2").total_compute_s == pytest.approx(3.0)


def test_the_migration_backfills_the_cost_days_of_existing_costs(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006_alerts")
        connection.execute(insert(CostRow.__table__), [
            {"site_id": "s1", "run_id": f"r{n % 7}", "stage_id": f"shot:{n}", "attempt": 1, "tenant_id": "acme",
             "kind": "render", "worker": None, "origin": "local", "provider": "local",
             "compute_seconds": None if n == 3 else n * 1.5, "usd": n / 100, "outcome": "done",
             "committed_at": NOW - n * 20_000, "replicated_seq": n, "updated_at": NOW} for n in range(40)])
    migrate(engine)
    try:
        assert_equal(engine)
        assert len(rolled_up(engine)) > 7  # runs spread over several days
    finally:
        engine.dispose()
