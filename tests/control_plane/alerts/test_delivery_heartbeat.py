"""The dead-man heartbeat against a real HTTP receiver: cadence, a hanging checker, failures, no secret in logs."""

from __future__ import annotations

import logging
import time

import pytest

from control_plane.alerts.heartbeat import Heartbeat, Ping
from control_plane.alerts.testing import RecordingReceiver

SECRET = "d1e2a3d4-check-uuid"


def test_pings_keep_their_cadence_and_are_recorded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="control_plane.alerts.heartbeat")
    pings: list[Ping] = []
    with RecordingReceiver() as rx:
        beat = Heartbeat(f"{rx.base_url}/ping/{SECRET}?k=v", interval_s=0.2, timeout_s=1.0, record=pings.append)
        beat.start()
        try:
            got = rx.wait_for(4, 5, f"/ping/{SECRET}")
        finally:
            beat.stop()
    assert [r.method for r in got] == ["GET"] * 4
    # ticks 0, 1, 2, 3 of 0.2 s: neither hammering nor drifting by a whole interval per ping
    assert 0.4 < got[3].at - got[0].at < 4.0
    assert all(p.ok and p.status == 200 and p.error == "" for p in pings[:4])
    assert beat.last is not None and beat.last.ok
    text = caplog.text
    assert f"heartbeat GET http://127.0.0.1:{rx.port}/…: HTTP 200" in text
    assert SECRET not in text


def test_a_hanging_checker_is_cut_at_the_timeout_and_stop_is_bounded() -> None:
    pings: list[Ping] = []
    with RecordingReceiver() as rx:
        rx.hang("/ping", 30, times=10)
        beat = Heartbeat(f"{rx.base_url}/ping", interval_s=0.5, timeout_s=0.3, method="POST",
                         record=pings.append).start()
        try:
            rx.wait_for(2, 5, "/ping")  # the second ping went although the first never got an answer
        finally:
            started = time.monotonic()
            beat.stop()
            stopped_in = time.monotonic() - started
    assert stopped_in < 3.0  # the hang is 30 s
    assert [r.method for r in rx.requests("/ping")][:2] == ["POST", "POST"]
    assert pings and all(not p.ok and p.error == "no HTTP response (ReadTimeout)" for p in pings)
    assert all(0.25 < p.elapsed_s < 3.0 for p in pings)


def test_a_failing_checker_is_logged_and_the_pings_go_on(caplog: pytest.LogCaptureFixture) -> None:
    pings: list[Ping] = []
    with RecordingReceiver() as rx:
        rx.fail("/ping", 2, status=503)
        beat = Heartbeat(f"{rx.base_url}/ping", interval_s=0.1, record=pings.append).start()
        try:
            rx.wait_for(3, 5, "/ping")
        finally:
            beat.stop()
    assert [(p.ok, p.status, p.error) for p in pings[:3]] == [(False, 503, "HTTP 503"), (False, 503, "HTTP 503"),
                                                              (True, 200, "")]
    assert "failed: HTTP 503" in caplog.text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"heartbeat url: value 'ftp://host/…': expected an http"):
        Heartbeat(f"ftp://host/{SECRET}")
    with pytest.raises(ValueError, match=r"heartbeat method: value 'PUT'"):
        Heartbeat("https://hc.example/ping", method="PUT")
    with pytest.raises(ValueError, match=r"interval_s 0"):
        Heartbeat("https://hc.example/ping", interval_s=0)
