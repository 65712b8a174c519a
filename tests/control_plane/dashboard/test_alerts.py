"""The Alerts pages over alerts the real emitter raised from fleet rows fed through the centre's ingest, and
delivered by the real deliverer to a real HTTP receiver; acks and silences posted through the page's forms
land in the same core (and the same audit rows) as the API's and the CLI's."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.tables import AlertRow, SilenceRow
from tests.control_plane.alerts.fleetfeed import Harness, harness
from tests.control_plane.dashboard.conftest import Dash, csrf_of


@pytest.fixture
def raised(dash: Dash) -> Iterator[tuple[Dash, Harness, AlertRow]]:
    """A failed stage on host h1 raised as a job_failed alert; its first delivery got a 500, its retry a 200."""
    with harness(dash.engine, extra="flap_wait: 0") as h:
        h.rx.fail("/oncall", 1)
        h.feed.worker("s1", "w1", "h1")
        h.feed.run("s1", "r1", "failed", "stage probe:1: boom")
        h.feed.stage("s1", "r1", "probe:1", "failed", 1, "boom: exit 1", worker="w1")
        h.tick()
        [alert] = _alerts(dash)
        assert alert.status == "firing" and len(h.rx.requests("/oncall")) == 2
        yield dash, h, alert


def _alerts(dash: Dash) -> list[AlertRow]:
    with Session(dash.engine) as session:
        return list(session.scalars(select(AlertRow).order_by(AlertRow.id)))


def _silences(dash: Dash) -> list[SilenceRow]:
    with Session(dash.engine) as session:
        return list(session.scalars(select(SilenceRow).order_by(SilenceRow.id)))


def _ack_forms(page: str) -> list[str]:
    return re.findall(r'action="/alerts/(\d+)/ack"', page)


def test_the_alerts_page_lists_each_alert_with_its_links_and_its_delivery_attempts(
        raised: tuple[Dash, Harness, AlertRow]) -> None:
    dash, _h, alert = raised
    browser = dash.browser("viewer")
    page = browser.get("/alerts")
    assert page.status_code == 200, page.text
    row = re.search(rf'<tr><td><a href="/alerts/{alert.id}">.*?</tr>', page.text, re.S)
    assert row, page.text
    for fact in ("s-firing", "job_failed", "s-warning", 'href="/hosts/s1/h1"', 'href="/runs/s1/r1"',
                 "stage probe:1", "<td>1</td>"):
        assert fact in row.group(0), (fact, row.group(0))
    assert _ack_forms(page.text) == [] and 'action="/silences' not in page.text  # a viewer gets no buttons
    assert 'href="/alerts"' in page.text  # the navigation offers the page

    detail = browser.get(f"/alerts/{alert.id}")
    assert detail.status_code == 200, detail.text
    attempts = re.findall(r"<tr><td>oncall</td><td>firing</td>.*?</tr>", detail.text, re.S)
    assert len(attempts) == 2, detail.text
    assert "s-failed" in attempts[0] and "500" in attempts[0]  # the error the receiver's 500 left
    assert "s-sent" in attempts[1]

    fleet = browser.get("/")
    assert re.search(r'<a href="/alerts\?status=firing"><b>1</b> firing</a>', fleet.text), fleet.text

    # another tenant's viewer sees neither the alert nor it in the count
    other = dash.browser("viewer-other")
    assert other.get(f"/alerts/{alert.id}").status_code == 404
    assert f'href="/alerts/{alert.id}"' not in other.get("/alerts").text
    assert "<b>0</b> firing" in other.get("/").text
    assert browser.get("/alerts/abc").status_code == 422


def test_an_operator_acks_from_the_page_through_the_same_core_and_audit(
        raised: tuple[Dash, Harness, AlertRow]) -> None:
    dash, h, alert = raised
    browser = dash.browser("operator")
    page = browser.get("/alerts")
    assert _ack_forms(page.text) == [str(alert.id)]
    answer = browser.post(f"/alerts/{alert.id}/ack", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == f"/alerts/{alert.id}", answer.text
    [acked] = _alerts(dash)
    assert (acked.status, acked.acked_by) == ("acked", "operator") and acked.acked_at is not None
    [entry] = [e for e in dash.audit_rows("alert") if e["detail"].get("action") == "ack"]
    assert (entry["actor"], entry["subject"], entry["detail"]["via"]) == ("operator", f"alert {alert.id}", "dashboard")
    shown = browser.get("/alerts").text
    assert "operator <small>" in shown and _ack_forms(shown) == []  # acked: who, and no second button

    # the emitter honours it: an ack stops escalation to the lead
    h.clock.now += 3600
    h.tick()
    assert h.got("lead") == []


def test_an_operator_silences_and_unsilences_through_the_form(dash: Dash) -> None:
    browser = dash.browser("operator")
    page = browser.get("/alerts")
    csrf = csrf_of(page.text)
    assert "No silence is in force" in page.text
    answer = browser.post("/silences", data={"csrf": csrf, "field": ["type", "site"], "value": ["host_down", "s1"],
                                             "hours": "4", "reason": "reimaging h1"})
    assert answer.status_code == 303, answer.text
    [silence] = _silences(dash)
    assert silence.matchers == {"type": "host_down", "site": "s1"} and silence.created_by == "operator"
    assert silence.ends_at - silence.starts_at == 4 * 3600
    shown = browser.get("/alerts").text
    assert "<code>type=host_down</code>" in shown and "reimaging h1" in shown
    assert f'action="/silences/{silence.id}/unsilence"' in shown

    lifted = browser.post(f"/silences/{silence.id}/unsilence", data={"csrf": csrf})
    assert lifted.status_code == 303, lifted.text
    [silence] = _silences(dash)
    assert silence.removed_by == "operator"
    actions = [e["detail"]["action"] for e in dash.audit_rows("alert")]
    assert actions == ["silence", "unsilence"]
    assert "No silence is in force" in browser.get("/alerts").text

    # bad input: a clear page naming the field, nothing written
    for data, named in (({"field": ["type"], "value": ["host_down"], "hours": "5", "reason": "x"}, "hours"),
                        ({"field": ["colour"], "value": ["red"], "hours": "1", "reason": "x"}, "colour"),
                        ({"field": ["type"], "value": ["host_down"], "hours": "1", "reason": " "}, "reason")):
        bad = browser.post("/silences", data={"csrf": csrf, **data})
        assert bad.status_code == 422 and named in bad.text, bad.text
    assert len(_silences(dash)) == 1


def test_a_viewer_and_a_forged_form_are_refused(raised: tuple[Dash, Harness, AlertRow]) -> None:
    dash, _h, alert = raised
    viewer = dash.browser("viewer")
    csrf = csrf_of(viewer.get("/alerts").text)
    for path, data in ((f"/alerts/{alert.id}/ack", {}), ("/silences", {"field": ["type"], "value": ["job_failed"],
                                                                       "hours": "1", "reason": "quiet"})):
        refused = viewer.post(path, data={"csrf": csrf, **data})
        assert refused.status_code == 403 and "needs operator" in refused.text, refused.text
    operator = dash.browser("operator")
    forged = operator.post(f"/alerts/{alert.id}/ack", data={"csrf": "not-the-token"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    anonymous = httpx.post(f"{dash.url}/alerts/{alert.id}/ack", data={"csrf": csrf})
    assert anonymous.status_code == 403
    [still] = _alerts(dash)
    assert still.status == "firing" and still.acked_by is None and _silences(dash) == []
    assert len(dash.audit_rows("refused")) >= 4


def test_the_empty_alerts_page_says_what_to_do(dash: Dash) -> None:
    page = dash.browser("viewer").get("/alerts")
    assert page.status_code == 200
    assert "No open alerts" in page.text and "cinefleet alerts serve" in page.text
    assert dash.browser("viewer").get("/alerts/7").status_code == 404
