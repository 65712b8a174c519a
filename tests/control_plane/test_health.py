"""Host liveness at the centre: offline after three missed intervals, unless the observer is suspect."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.fleet import Fleet, Liveness
from control_plane.health import Report, ReportRejected, Seen, Telemetry, judge


def hosts(site: str, count: int, last: float, prefix: str = "h") -> list[Seen]:
    return [Seen(site, f"{prefix}{i}", last, 1.0, "healthy") for i in range(count)]


def test_one_silent_host_is_offline_after_three_intervals_its_peers_stay_healthy() -> None:
    fleet = [*hosts("a", 3, 100.0), Seen("a", "dead", 96.5, 1.0, "healthy")]
    verdicts, sites = judge(fleet, {"a": 100.0}, now=100.2, site_timeout_s=3.0)
    assert verdicts[("a", "dead")].state == "offline"
    assert "3 intervals" in verdicts[("a", "dead")].reasons[0]
    assert {verdicts[("a", f"h{i}")].state for i in range(3)} == {"healthy"}
    assert sites["a"].state == "connected"
    # Still within three intervals: not offline yet.
    verdicts, _ = judge(fleet, {"a": 100.0}, now=99.4, site_timeout_s=3.0)
    assert verdicts[("a", "dead")].state == "healthy"


def test_most_hosts_of_a_site_silent_at_once_disconnect_the_site_and_no_host_goes_offline() -> None:
    fleet = [*hosts("a", 3, 90.0), Seen("a", "h3", 90.5, 1.0, "healthy"), *hosts("b", 4, 100.0)]
    verdicts, sites = judge(fleet, {"a": 100.0, "b": 100.0}, now=100.2, site_timeout_s=30.0)
    assert {verdicts[("a", f"h{i}")].state for i in range(4)} == {"disconnected"}
    assert sites["a"].state == "disconnected" and "observer suspect" in sites["a"].reason
    assert sites["b"].state == "connected"


def test_a_verdict_does_not_depend_on_the_order_hosts_are_judged_in() -> None:
    # h1 fell silent long ago; h2 and h3 just now, together: they disconnect the site, h1 stays offline.
    fleet = [Seen("a", "h1", 90.0, 1.0, "healthy"), *hosts("a", 2, 96.5, prefix="x")]
    for order in (fleet, fleet[::-1]):
        verdicts, sites = judge(order, {"a": 100.0}, now=100.0, site_timeout_s=30.0)
        assert [verdicts[("a", name)].state for name in ("h1", "x0", "x1")] == ["offline", "disconnected",
                                                                                 "disconnected"]
        assert sites["a"].state == "disconnected"


def test_a_site_not_heard_from_is_disconnected_and_a_degraded_host_keeps_its_reasons() -> None:
    fleet = [Seen("a", "h0", 100.0, 1.0, "degraded", ("disk /data 95% full",))]
    verdicts, sites = judge(fleet, {"a": 100.0, "quiet": 50.0}, now=100.5, site_timeout_s=10.0)
    assert verdicts[("a", "h0")].state == "degraded" and verdicts[("a", "h0")].reasons == ("disk /data 95% full",)
    assert sites["quiet"].state == "disconnected" and "not heard from" in sites["quiet"].reason


def test_reports_are_kept_latest_per_host_with_a_bounded_history(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    migrate(engine)
    now = [1000.0]
    telemetry = Telemetry(engine, clock=lambda: now[0], history_s=120.0)
    for step in range(40):
        now[0] = 1000.0 + 5 * step
        telemetry.record(Report("a", "h1", "degraded" if step == 39 else "healthy", agent_address="127.0.0.1:1",
                                interval_s=5.0, reasons=("load high",) if step == 39 else (), load_1m=step))
    for bad, field in ((Report("a", "h1", "sleepy"), "state"), (Report("a", "h1", "healthy", agent_address="h1"),
                                                                 "agent_address")):
        with pytest.raises(ReportRejected, match=f"{field}: value"):
            telemetry.record(bad)
    with Session(engine) as session:
        fleet = Fleet(session, Liveness(interval_s=5.0), now=now[0] + 1)
        [host] = fleet.hosts()
        assert (host.state, host.reasons, host.load_1m, host.agent_address) == ("degraded", ["load high"], 39.0,
                                                                                 "127.0.0.1:1")
        history = fleet.host_history("a", "h1")
        # Trimmed to the last 120 s (plus at most one trim period): bounded, newest kept.
        assert history[-1].load_1m == 39.0 and len(history) < 40 and history[0].received_at >= now[0] - 120 - 60
        assert Fleet(session, Liveness(interval_s=5.0), now=now[0] + 16).hosts()[0].state == "disconnected"
