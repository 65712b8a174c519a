"""Every page for every role, empty and populated; the error pages; role-aware buttons; the JSON API unchanged.

Real HTTP (uvicorn on loopback) against the real app over a real SQLite fleet database; fleet data
arrives through the real ingest and telemetry paths (``FleetWriter``)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from control_plane.api import create_app
from control_plane.commands import Commands
from control_plane.dashboard.pages import MAX_ROWS
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.directory import FleetDirectory
from control_plane.people import People
from control_plane.signer import SignerClient
from tests.control_plane.dashboard.conftest import ROLES, SITE, Dash, FleetWriter, run_row, serving, sign_in

LIST_PAGES = ("/", "/runs", "/queues", "/workers", "/hosts", "/alerts", "/commands", "/audit")
DETAIL_PAGES = (f"/runs/{SITE}/r-live", f"/runs/{SITE}/r-failed", f"/hosts/{SITE}/h1")
ACTION_FORM = 'action="/actions"'


def _no_traceback(page: httpx.Response) -> None:
    assert "Traceback" not in page.text and page.headers["content-type"].startswith("text/html"), page.text[:300]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_empty_with_a_hint_of_what_to_do(dash: Dash, role: str) -> None:
    browser = dash.browser(role)
    for path in LIST_PAGES:
        page = browser.get(path)
        if path == "/audit" and role != "admin":
            assert page.status_code == 403 and "needs admin" in page.text, page.text
            continue
        assert page.status_code == 200, (path, page.text)
        _no_traceback(page)
        if path != "/audit":  # never empty: making the users wrote rows
            assert 'class="empty"' in page.text, path  # an empty state that says what to do
        assert f"<span>{role} · {role}</span>" in page.text  # who is signed in, and as what
    # the navigation offers only what the role may open
    nav = browser.get("/").text
    assert ('href="/audit"' in nav) == (role == "admin")


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_populated_and_buttons_follow_the_role(populated: Dash, role: str) -> None:
    browser = populated.browser(role)
    for path in (*LIST_PAGES, *DETAIL_PAGES):
        page = browser.get(path)
        if path == "/audit" and role != "admin":
            assert page.status_code == 403
            continue
        assert page.status_code == 200, (path, page.text)
        _no_traceback(page)
        buttons = ACTION_FORM in page.text
        if path in ("/queues", "/workers", f"/runs/{SITE}/r-live", f"/runs/{SITE}/r-failed", f"/hosts/{SITE}/h1"):
            assert buttons == (role != "viewer"), (path, role)
        elif path != "/":
            assert not buttons, path
    fleet = browser.get("/").text
    assert "host s1/h1 is degraded: disk / 95 % ≥ 90 %" in html.unescape(fleet)
    assert "queue s1/media_queue is paused" in fleet
    assert 'href="/runs/s1/r-live"' in fleet and 'href="/runs/s1/r-failed"' in fleet
    assert 'data-live="hosts.degraded">1<' in fleet
    run = browser.get(f"/runs/{SITE}/r-failed").text
    assert "ValueError: &lt;b&gt;bad&lt;/b&gt; script" in run  # autoescaped, never markup
    assert "<b>bad</b>" not in run
    live = browser.get(f"/runs/{SITE}/r-live").text
    assert 'data-events="/events?run=s1/r-live"' in live and "<svg" in live and "<rect" in live
    assert "ef" * 32 in live  # the artifact hash of the finished stage
    assert "<td>2 of 3</td>" in live  # its cache hits
    if role != "viewer":
        assert 'value="retry-stage"' in browser.get(f"/runs/{SITE}/r-failed").text
        assert 'value="cancel-run"' in live and 'name="confirm" required' in live
        workers = browser.get("/workers").text
        assert 'value="drain-worker"' in workers and 'value="undrain-worker"' in workers  # w1 idle, w2 draining
    host = browser.get(f"/hosts/{SITE}/h1").text
    assert "<polyline" in host and "cpu 61 °C" in html.unescape(host) and "90 %" in host
    # times are machine-readable UTC, with UTC on hover
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="[^"]+ UTC">', fleet)


def test_runs_filters_keyset_pages_and_the_id_search(populated: Dash) -> None:
    browser = populated.browser("viewer")

    def listed(query: str) -> list[str]:
        page = browser.get(f"/runs?{query}")
        assert page.status_code == 200, page.text
        table = page.text.split('aria-label="Filter runs"')[1]
        return re.findall(r'<a href="/runs/s1/([^"]+)">', table)

    assert listed("") == ["r-other", "r-live", "r-failed", "r-done"]
    assert listed("status=failed&status=completed") == ["r-other", "r-failed", "r-done"]
    assert listed("tenant=acme&status=completed") == ["r-done"]
    assert listed(f"project={'ab' * 32}&site=s1") == ["r-other", "r-live", "r-failed", "r-done"]
    assert listed("from=2000-01-01&to=2000-01-02") == []
    assert "r-live" in browser.get("/runs?q=r-live").text.split("aria-label=\"Filter runs\"")[0]
    assert "No run with that id" in browser.get("/runs?q=r-nope").text
    # a viewer limited to another tenant sees only that tenant's runs, and not ours by id either
    other = populated.browser("viewer-other")
    assert re.findall(r'href="/runs/s1/([^"]+)"', other.get("/runs").text) == ["r-other"]
    assert other.get(f"/runs/{SITE}/r-done").status_code == 404
    # bad input names the field, value and expectation, on a page
    for query, field in (("from=yesterday", "from"), ("status=exploded", "status"), ("after=garbage", "cursor")):
        page = browser.get(f"/runs?{query}")
        assert page.status_code == 422 and field in page.text, page.text
        _no_traceback(page)


def test_runs_are_paged_by_keyset(populated: Dash) -> None:
    writer = FleetWriter(populated.engine)
    writer.push(*(("run", (f"r-{n:03}",), run_row(f"r-{n:03}", "completed", 1000.0 + n)) for n in range(55)))
    browser = populated.browser("viewer")
    seen: list[str] = []
    page = browser.get("/runs")
    while True:
        table = page.text.split('aria-label="Filter runs"')[1]
        seen += re.findall(r'<a href="/runs/s1/([^"]+)">', table)
        following = re.search(r'<a href="(/runs\?[^"]+)" rel="next">', page.text)
        if following is None:
            break
        page = browser.get(html.unescape(following.group(1)))
        assert page.status_code == 200, page.text
    assert len(seen) == 59 and len(set(seen)) == 59
    assert seen[:4] == ["r-other", "r-live", "r-failed", "r-done"] and seen[-1] == "r-000"
    oldest = browser.get("/runs?sort=oldest")
    table = oldest.text.split('aria-label="Filter runs"')[1]
    assert re.findall(r'<a href="/runs/s1/([^"]+)">', table)[:3] == ["r-000", "r-001", "r-002"]
    following = re.search(r'<a href="(/runs\?[^"]+)" rel="next">Newer runs', oldest.text)
    assert following is not None and "sort=oldest" in following.group(1)
    second = browser.get(html.unescape(following.group(1))).text.split('aria-label="Filter runs"')[1]
    assert re.findall(r'<a href="/runs/s1/([^"]+)">', second)[:2] == ["r-050", "r-051"]
    assert browser.get("/runs?sort=sideways").status_code == 422


def test_error_pages_are_html_and_the_api_keeps_json(dash: Dash) -> None:
    browser = dash.browser("viewer")
    missing = browser.get("/no/such/page")
    assert missing.status_code == 404 and "There is no page at /no/such/page" in missing.text
    _no_traceback(missing)
    assert browser.get("/runs/s1/absent").status_code == 404
    assert browser.get("/hosts/s1/absent").status_code == 404
    assert browser.get("/commands/absent").status_code == 404
    forbidden = browser.get("/audit")
    assert forbidden.status_code == 403 and "needs admin" in forbidden.text
    _no_traceback(forbidden)
    api = httpx.get(f"{dash.url}/api/v1/no-such-endpoint")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
    api = httpx.get(f"{dash.url}/api/v1/fleet")
    assert api.status_code == 401 and api.json()["error"].startswith("a valid bearer token")
    assert httpx.get(f"{dash.url}/api/v1/fleet", headers={"Authorization": f"Bearer {dash.tokens['viewer']}"}
                     ).json()["sites"] == {}
    # the static files are served, the pages say where they come from
    assert "EventSource" in browser.get("/static/dash.js").text
    assert "default-src 'self'" in browser.get("/").headers["content-security-policy"]


def test_an_unreachable_database_is_a_503_page(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    engine: Engine = open_engine(sqlite_url(folder / "fleet.db"))
    migrate(engine)
    people = People(engine)
    people.add_user("ann", "viewer")
    token = people.create_token("ann").token
    app = create_app(engine, people, Commands(engine, FleetDirectory(engine), SignerClient(tmp_path / "s.sock")))
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as browser:
            assert sign_in(browser, token).status_code == 303
            assert browser.get("/").status_code == 200
            folder.rename(folder.with_name("moved"))  # the database is gone from where the centre looks
            engine.dispose()
            for path in ("/", "/runs", "/login"):
                page = browser.get(path)
                if path == "/login":  # the sign-in form needs no database
                    assert page.status_code == 200
                    continue
                assert page.status_code == 503, (path, page.text)
                assert "The fleet database is unreachable" in page.text
                _no_traceback(page)
    finally:
        engine.dispose()


def test_workers_and_hosts_pages_filter_and_bound_their_rows(populated: Dash) -> None:
    writer = FleetWriter(populated.engine)
    writer.push(*(("worker", (f"wx{n:03}",), {"name": f"wx{n:03}", "host": "h2", "pid": n, "status": "idle",
                                               "queues": ["cpu_queue"], "current_job": None, "since": 1.0,
                                               "started_at": 1.0}) for n in range(MAX_ROWS + 5)))
    browser = populated.browser("viewer")
    page = browser.get("/workers").text
    assert page.count("<tr><td><a href=\"/workers?site=s1\">") == MAX_ROWS and "Showing the first" in page
    draining = browser.get("/workers?status=draining").text
    assert "<td>w2</td>" in draining and "<td>w1</td>" not in draining and "Showing the first" not in draining
    assert browser.get("/workers?status=sleepy").status_code == 422
    degraded = browser.get("/hosts?state=degraded").text
    assert 'href="/hosts/s1/h1"' in degraded
    assert 'href="/hosts/s1/h1"' not in browser.get("/hosts?state=healthy").text
    assert 'href="/hosts/s1/h1"' not in browser.get("/hosts?site=elsewhere").text
