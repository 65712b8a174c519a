"""The dashboard in a real headless Chromium against a real fleet (a centre, two sites, their agents and
workers): signing in as each role, a run followed live, a drain from the page reaching the site, a
viewer with no buttons whose forged posts are refused, the lineage diff after a one-line edit, a
phone-sized viewport without horizontal scroll on every page, and a screenshot of each page.

Every wait is bounded (Playwright's step timeout, ``wait_for``'s). Screenshots go to
``$CINEFLEET_SCREENSHOTS`` when set (``docs/screenshots`` to refresh the docs), else a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Select, func, select

from control_plane.dashboard_testing import LAPTOP, PHONE, chromium_path, horizontal_overflow
from control_plane.tables import AuditRow, CommandRow
from pipeline.testing import short_pilot_project, wait_for
from tests.control_plane.browser.conftest import ROLES, SITES, Rig
from tests.pipeline.conftest import require_espeak

#: The pilot's first line of its second beat, spoken in this shot: the one-line edit changes it alone.
EDITED_SHOT = "shot:harbour-radio-l1"
SCREENSHOTS_ENV = "CINEFLEET_SCREENSHOTS"


def _in_flight(page: Page) -> int:
    return int(page.locator('[data-live="in_flight"]').inner_text())


def test_the_system_chromium_starts_headless(rig: Rig) -> None:
    assert Path(chromium_path()).is_file()
    assert re.match(r"\d+\.", rig.browser.version), rig.browser.version
    page = rig.browser.page()
    page.goto("/")  # signed out: to the login page, which says how to get a token
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    expect(page.locator("h1")).to_have_text("Sign in")
    page.context.close()


@pytest.mark.parametrize("role", ROLES)
def test_each_role_signs_in_sees_its_pages_and_signs_out(rig: Rig, role: str) -> None:
    page = rig.browser.signed_in(rig.tokens[role])
    expect(page.locator(".who")).to_contain_text(f"{role}-ann · {role}")
    nav = page.locator("header nav a").all_inner_texts()
    assert {"Fleet", "Runs", "Workers", "Hosts", "Cost"} <= set(nav), nav
    assert ("Audit" in nav) == (role == "admin"), nav
    expect(page.locator("table").first).to_contain_text("east")
    page.click(".who button[type=submit]")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/workers")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.context.close()


def test_a_run_goes_from_queued_to_completed_on_the_fleet_page_without_a_reload(rig: Rig) -> None:
    site = rig.sites["east"]
    page = rig.browser.signed_in(rig.tokens["operator"])
    expect(page.locator('[data-live="in_flight"]')).to_have_text("0")
    completed = int(page.locator('[data-live="runs.completed"]').inner_text())
    page.evaluate("() => { window.__sameDocument = 'kept'; }")  # a reload would lose it
    site.client.control("pause-queue", queue="cpu_queue")
    try:
        run_id = site.client.submit_probe(2)
        expect(page.locator('[data-live="in_flight"]')).to_have_text("1")  # queued, pushed over SSE
        assert site.run(run_id)["status"] in ("queued", "running")
    finally:
        site.client.control("resume-queue", queue="cpu_queue")
    assert site.wait(run_id, timeout=60)["status"] == "completed"
    expect(page.locator('[data-live="in_flight"]')).to_have_text("0")
    expect(page.locator('[data-live="runs.completed"]')).to_have_text(str(completed + 1))
    assert page.evaluate("() => window.__sameDocument") == "kept", "the page was reloaded"
    rig.notes["probe"] = run_id
    page.context.close()


def test_an_operator_drains_a_worker_from_the_page_and_the_site_drains_it(rig: Rig) -> None:
    _host, worker = SITES["west"]
    page = rig.browser.signed_in(rig.tokens["operator"])
    page.goto("/workers?site=west")
    row = page.locator("tr", has_text=worker)
    drain = row.locator("form.act", has=page.locator("input[name=action][value=drain-worker]"))
    confirm = drain.locator("input[name=confirm]")
    if confirm.count():  # the action table decides which actions ask for the typed target
        confirm.fill(worker)
    drain.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/commands/[0-9a-f]+$"))
    expect(page.locator("h1")).to_contain_text("drain-worker")
    wait_for(lambda: rig.worker_status("west") == "drained", "the worker drained at its site", 60)
    wait_for(lambda: _shows(page, "/workers?site=west", worker, "drained"), "the drain replicated to the page", 60)

    # A destructive action asks for the target typed: a wrong one is refused and nothing happens.
    page.goto("/workers?site=west")
    restart = page.locator("tr", has_text=worker).locator(
        "form.act", has=page.locator("input[name=action][value=restart-worker]"))
    restart.locator("input[name=confirm]").fill("not-the-worker")
    restart.locator("button[type=submit]").click()
    expect(page.locator("h1")).not_to_contain_text("restart-worker")
    assert rig.worker_status("west") == "drained"

    # Undrained from the page again: the site takes jobs on it once more.
    page.goto("/workers?site=west")
    page.locator("tr", has_text=worker).locator("form.act", has=page.locator(
        "input[name=action][value=undrain-worker]")).locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/commands/[0-9a-f]+$"))
    wait_for(lambda: rig.worker_status("west") in ("idle", "active"), "the worker undrained at its site", 60)
    page.context.close()


def _shows(page: Page, url: str, row_text: str, badge: str) -> bool:
    page.goto(url)
    return page.locator("tr", has_text=row_text).locator(f".badge:text-is('{badge}')").count() > 0


def test_a_viewer_finds_no_action_buttons_and_forged_posts_are_refused(rig: Rig) -> None:
    site_id = "west"
    _host, worker = SITES[site_id]
    viewer = rig.browser.signed_in(rig.tokens["viewer"])
    for url in ("/", "/workers", "/queues", "/commands", f"/runs/east/{rig.notes.get('probe', 'none')}"):
        viewer.goto(url)
        assert viewer.locator("form[action='/actions']").count() == 0, url
        assert viewer.locator("button:has-text('Drain'), button:has-text('Cancel run')").count() == 0, url
    # The viewer's own session and CSRF token, posting what an operator's button would: refused for the role.
    csrf = viewer.locator("form.who input[name=csrf]").get_attribute("value")
    form: dict[str, str | float | bool] = {"csrf": csrf or "", "site": site_id, "action": "drain-worker",
                                           "target": worker}
    refused = viewer.context.request.post("/actions", form=form, max_redirects=0)
    assert refused.status == 403, refused.text()[:300]
    # An operator's session without its CSRF token (a post forged from elsewhere): refused too.
    operator = rig.browser.signed_in(rig.tokens["operator"])
    forged = operator.context.request.post("/actions", form={**form, "csrf": "forged"}, max_redirects=0)
    assert forged.status == 403 and "CSRF" in forged.text(), forged.text()[:300]
    # A page of another site posting to the centre: the strict SameSite cookie does not go with it.
    forging = (f'<form method=post action="{rig.centre.url}/actions"><input name=site value={site_id}>'
               f'<input name=action value=drain-worker><input name=target value={worker}><button>go</button></form>')
    operator.route("http://elsewhere.test/**", lambda route: route.fulfill(body=forging, content_type="text/html"))
    operator.goto("http://elsewhere.test/")
    operator.click("button")
    expect(operator).to_have_url(f"{rig.centre.url}/actions")
    expect(operator.locator("h1")).to_contain_text("Not allowed")
    expect(operator.locator("main")).to_contain_text("session has ended")
    assert rig.worker_status(site_id) in ("idle", "active"), "nothing reached the site"
    with rig.centre.fleet() as fleet:
        assert fleet.session.execute(_audit_refusals()).scalar_one() >= 3, "each refusal is audited"
    viewer.context.close()
    operator.context.close()


def _audit_refusals() -> Select[int]:
    return select(func.count()).select_from(AuditRow).where(AuditRow.kind == "refused",
                                                             AuditRow.subject == "POST /actions")


def test_the_lineage_diff_after_a_one_line_edit_shows_exactly_the_changed_shot(rig: Rig) -> None:
    require_espeak()
    site = rig.sites["east"]
    project = short_pilot_project(rig.root / "project" / "project.json")
    first = site.client.submit(project)
    assert site.wait(first, timeout=240)["status"] == "completed"
    data = json.loads(project.read_text())
    data["beats"][1]["dialogue"][0]["text"] = "Gull Point, this is Saltmarsh. Two boats are still out."
    project.write_text(json.dumps(data, indent=2))
    edited = site.client.submit(project)
    assert site.wait(edited, timeout=240)["status"] == "completed"
    rig.notes |= {"first": first, "edited": edited}

    page = rig.browser.signed_in(rig.tokens["viewer"])
    wait_for(lambda: _shows(page, f"/runs/east/{edited}", "finish", "done"), "the edited run at the centre", 60)
    page.goto(f"/runs/east/{first}")
    page.click("text=Lineage: how each artifact was made")
    expect(page.locator("h1")).to_contain_text(f"Lineage of run {first}")
    expect(page.locator(f"svg.graph g.node[data-role='{EDITED_SHOT}']")).to_have_count(1)
    page.select_option("select[name=b]", f"east/{edited}")
    page.click("text=Show what differs")
    expect(page.locator("h1")).to_have_text("What differs between two runs")
    shots = page.locator("#changed-table tr[data-group=shots]")
    expect(shots).to_have_count(1)
    expect(shots.first).to_have_attribute("data-role", EDITED_SHOT)
    expect(shots.first).to_contain_text("line spoken in it changed")
    expect(page.locator(f"svg.graph g.node.d-changed[data-role='{EDITED_SHOT}']")).to_have_count(1)
    expect(page.locator("svg.graph g.node[data-role^='shot:']:not(.d-changed)")).to_have_count(3)
    page.context.close()


def _tour(rig: Rig) -> dict[str, str]:
    """Every page worth a look, by the file name its screenshot gets."""
    first, edited = rig.notes.get("first", "none"), rig.notes.get("edited", "none")
    host, worker = SITES["east"]
    with rig.centre.fleet() as fleet:
        command = fleet.session.execute(_latest_command()).scalar()
    return {"fleet": "/", "runs": "/runs", "run": f"/runs/east/{edited}", "lineage": f"/runs/east/{first}/lineage",
            "lineage-diff": f"/lineage?a=east/{first}&b=east/{edited}", "queues": "/queues", "workers": "/workers",
            "hosts": "/hosts", "host": f"/hosts/east/{host}", "commands": "/commands",
            "command": f"/commands/{command}", "audit": "/audit?verify=1", "cost": "/cost", "alerts": "/alerts",
            "not-found": f"/runs/east/no-such-run-{worker}"}


def _latest_command() -> Select[str]:
    return select(CommandRow.command_id).order_by(CommandRow.created_at.desc()).limit(1)


def test_every_page_fits_a_phone_without_sideways_scroll_and_is_saved_as_a_screenshot(
        rig: Rig, tmp_path: Path) -> None:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    tour = _tour(rig)
    phone = rig.browser.signed_in(rig.tokens["admin"], PHONE)
    too_wide = []
    for name, url in tour.items():
        phone.goto(url)
        widths = horizontal_overflow(phone)
        if widths["scrollWidth"] > widths["clientWidth"]:
            too_wide.append((name, widths))
    phone.goto("/")
    phone.screenshot(path=str(folder / "fleet-phone.png"), full_page=True)
    assert not too_wide, f"pages wider than a {PHONE['width']} px phone: {too_wide}"

    laptop = rig.browser.signed_in(rig.tokens["admin"], LAPTOP)
    for name, url in tour.items():
        laptop.goto(url)
        laptop.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    signed_out = rig.browser.page(LAPTOP)
    signed_out.goto("/login")
    signed_out.screenshot(path=str(folder / "login.png"))
    for name in [*tour, "fleet-phone", "login"]:
        png = (folder / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    phone.context.close()
    laptop.context.close()
    signed_out.context.close()
