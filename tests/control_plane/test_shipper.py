"""The site's shipper against a real in-process centre (gRPC on loopback): it outlives its own database's
absence and ships every event once, in batches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.fleet import Fleet
from control_plane.ingest import Ingest
from control_plane.server import ControlConfig, ControlServer
from control_plane.sites import add_site
from pipeline.testing import wait_for
from site_scheduler import outbox
from site_scheduler import shipper as shipping
from site_scheduler.database import migrate, open_engine


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    running = ControlServer(ControlConfig(data_dir=tmp_path / "centre", grpc_listen="127.0.0.1:0"))
    running.start()
    yield running
    running.close()


def _append(engine: Engine, count: int) -> None:
    with Session(engine) as session, session.begin():
        for n in range(count):
            outbox.append_event(session, "cost", ["r1", "shot", str(n)], {"run_id": "r1", "stage_id": "shot",
                                "attempt": n, "kind": "shot", "worker": None, "origin": "local", "provider": "local",
                                "compute_seconds": None, "usd": 0.0, "outcome": "done"}, site_id="s1", tenant_id="t")


def _cursor(server: ControlServer) -> int:
    return Ingest(server.engine).cursor("s1")


def test_the_shipper_waits_out_a_missing_site_database_then_ships_everything_once(
        tmp_path: Path, server: ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipping, "BATCH_EVENTS", 7)  # several batches, the prefetch path included
    token, _ = add_site(server.engine, "s1")
    engine = open_engine(f"sqlite:///{tmp_path / 'site.sqlite'}")  # no tables yet: every read fails
    thread = shipping.Shipper("s1", engine, server.address, token)
    thread.start()
    try:
        time.sleep(1.5)  # a few failed reads of the outbox
        assert thread.is_alive() and thread.next_seq is None
        migrate(engine)
        _append(engine, 30)
        wait_for(lambda: _cursor(server) == 30, "all 30 events at the centre", 30)
        assert thread.is_alive()
        with Session(server.engine) as session:
            [site] = Fleet(session).sites()
            assert (site.applied_total, site.cursor) == (30, 30)
    finally:
        thread.stop()
        thread.join(10)
        engine.dispose()
