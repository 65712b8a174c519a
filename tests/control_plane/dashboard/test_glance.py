"""The fleet page's shared overview on a real fleet database: served for a tick, refreshed in the background
after it, recomputed before answering after a quiet spell; its host verdicts are the read model's own."""

from __future__ import annotations

import time

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.dashboard.glance import Glance
from control_plane.dashboard.load import queue_loads
from control_plane.fleet import Fleet, Liveness
from pipeline.testing import wait_for
from tests.control_plane.dashboard.conftest import FleetWriter, run_row


def test_the_overview_is_shared_for_a_tick_then_refreshed_and_never_served_stale_after_a_quiet_spell(
        dash_engine: Engine) -> None:
    writer = FleetWriter(dash_engine)
    writer.populate()
    clock = [100.0]
    glance = Glance(dash_engine, Liveness(), fresh_s=2.0, stale_s=10.0, clock=lambda: clock[0])

    def failed() -> int:
        return int(glance.get(None)["summary"].runs.get("failed", 0))

    assert failed() == 1 and glance.computed == 1
    with Session(dash_engine) as session:  # the same verdicts as the read model judges per request
        fleet = Fleet(session)
        assert [key for key, _ in glance.get(None)["unhealthy"]] == sorted(
            k for k, v in fleet.host_states().items() if v.state not in ("healthy", "disconnected"))
        assert glance.get(None)["loads"] == queue_loads(session, time.time())

    writer.push(("run", ("r-f2",), run_row("r-f2", "failed", time.time())))
    clock[0] += 1.0
    assert failed() == 1 and glance.computed == 1  # within the tick: the shared value, no read
    clock[0] += 2.0
    assert failed() == 1  # past the tick: the last value at once, the next one computed meanwhile
    wait_for(lambda: glance.computed == 2, "the background refresh", 30)
    assert failed() == 2

    writer.push(("run", ("r-f3",), run_row("r-f3", "failed", time.time())))
    clock[0] += 60.0
    assert failed() == 3 and glance.computed == 3  # after a quiet spell: computed before answering
    assert glance.get(["t-other"])["summary"].runs == {"completed": 1} and glance.computed == 4  # per scope
