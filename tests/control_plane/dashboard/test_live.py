"""Live updates over server-sent events, over real HTTP: one database read per tick whatever the number of
viewers, new figures pushed when the fleet changes, a run page told when its run changed, and a viewer
kept to what its tenants may see."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.api import create_app
from control_plane.commands import Commands
from control_plane.dashboard.live import Publisher
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.directory import FleetDirectory
from control_plane.people import People
from control_plane.signer import SignerClient
from pipeline.testing import wait_for
from tests.control_plane.dashboard.conftest import (
    SITE,
    Dash,
    FleetWriter,
    make_people,
    run_row,
    serving,
    stage_row,
)

WAIT_S = 30.0


class Stream:
    """A viewer's open event stream; :meth:`get` reads the next event (a read waits at most ``WAIT_S``)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def get(self) -> tuple[str, dict[str, Any]]:
        name = ""
        for line in self.lines:
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                return name, json.loads(line.removeprefix("data: "))
        raise AssertionError("the event stream ended")

    def until(self, check: Callable[[str, dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            name, data = self.get()
            if check(name, data):
                return data


@contextmanager
def events(browser: httpx.Client, path: str = "/events") -> Iterator[Stream]:
    with browser.stream("GET", path, timeout=WAIT_S) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def test_many_viewers_share_one_read_per_tick(populated: Dash) -> None:
    publisher: Publisher = populated.app.state.dashboard.live
    publisher.tick_s = 3600.0  # one tick during this test: every viewer must be served by that one read
    with ExitStack() as stack:
        streams = [stack.enter_context(events(populated.browser("viewer")))]
        figures = [streams[0].get()]  # read once; the next viewers of the topic join that tick
        streams += [stack.enter_context(events(populated.browser(user))) for user in ("operator", "admin")]
        figures += [stream.get() for stream in streams[1:]]
        assert publisher.reads == 1
        assert all(f == ("fleet", figures[0][1]) for f in figures)
        assert figures[0][1]["hosts.degraded"] == 1 and figures[0][1]["in_flight"] == 1
        assert figures[0][1]["sites.connected"] == 1
    # a viewer of another tenant is another topic: its runs are counted apart
    with events(populated.browser("viewer-other")) as other:
        _name, data = other.get()
        assert data["runs.completed"] == 1 and "runs.failed" not in data


def test_the_fleet_page_figures_follow_the_fleet(populated: Dash) -> None:
    populated.app.state.dashboard.live.tick_s = 0.1
    with events(populated.browser("viewer")) as stream:
        first = stream.until(lambda name, _data: name == "fleet")
        assert first["runs.failed"] == 1
        FleetWriter(populated.engine).push(("run", ("r-new",), run_row("r-new", "failed", 5000.0)))
        assert stream.until(lambda _name, data: data.get("runs.failed") == 2)["in_flight"] == 1


def test_a_run_page_hears_when_its_run_changes(populated: Dash) -> None:
    populated.app.state.dashboard.live.tick_s = 0.1
    browser = populated.browser("viewer")
    page = browser.get(f"/runs/{SITE}/r-live").text
    version = page.split('data-version="')[1].split('"')[0]
    with events(browser, f"/events?run={SITE}/r-live") as stream:
        name, data = stream.get()
        assert name == "run" and data == {"status": "running", "version": version}  # the page is current
        FleetWriter(populated.engine).push(("stage", ("r-live", "render"),
                                            stage_row("r-live", "render", "done", "w2", 4.0, "aa" * 32)))
        changed = stream.until(lambda _name, d: d["version"] != version)
        assert changed["status"] == "running"
    # another tenant's run is not found, on the stream as on the page; a bad topic names the field
    other = populated.browser("viewer-other")
    assert other.get(f"/events?run={SITE}/r-live").status_code == 404
    assert "expected SITE/RUN" in other.get("/events?run=nonsense").text
    assert populated.browser().get("/events").status_code == 401  # no session, no stream


def test_live_updates_ride_out_an_unreachable_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    engine = open_engine(sqlite_url(folder / "fleet.db"))
    migrate(engine)
    people = People(engine)
    tokens: dict[str, str] = {}
    make_people(people, tokens)
    app = create_app(engine, people, Commands(engine, FleetDirectory(engine), SignerClient(tmp_path / "s.sock")))
    publisher: Publisher = app.state.dashboard.live
    publisher.tick_s = 0.05
    try:
        with serving(app) as url:
            dash = Dash(url, app, engine, people, tokens)
            with events(dash.browser("viewer")) as stream:
                assert stream.get()[1]["in_flight"] == 0
                folder.rename(tmp_path / "away")  # the database is gone from where the centre looks
                engine.dispose()
                reads = publisher.reads
                wait_for(lambda: publisher.reads >= reads + 3, "the publisher to keep trying")
                assert "the fleet database is unreachable" in caplog.text
                (tmp_path / "away").rename(folder)  # back: the next tick reads again
                engine.dispose()
                FleetWriter(engine).push(("run", ("r-back",), run_row("r-back", "running", 10.0)))
                assert stream.until(lambda _name, data: data.get("in_flight") == 1)["runs.running"] == 1
            for browser in dash.browsers:
                browser.close()
    finally:
        engine.dispose()
