"""Sign-in, sessions and CSRF over real HTTP: the cookie's flags, logout, idle and absolute expiry, a revoked
token or disabled user ending a session, rate-limited failures, forged forms refused and audited."""

from __future__ import annotations

import html

import httpx
from sqlalchemy import select, update

from control_plane.dashboard.sessions import IDLE_S, LoginThrottle
from control_plane.dashboard.web import COOKIE, LOGIN_COOKIE
from control_plane.tables import CommandRow, WebSessionRow
from tests.control_plane.dashboard.conftest import Dash, csrf_of, login_nonce, sign_in


def _session_rows(dash: Dash) -> list[WebSessionRow]:
    with dash.engine.connect() as connection:
        return list(connection.execute(select(WebSessionRow.__table__)))  # type: ignore[arg-type]


def test_sign_in_sets_a_strict_http_only_cookie_and_logout_ends_the_session(dash: Dash) -> None:
    browser = dash.browser()
    first = browser.get("/runs?status=failed")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dfailed"
    answer = sign_in(browser, dash.tokens["operator"], "/runs?status=failed")
    assert answer.status_code == 303 and answer.headers["location"] == "/runs?status=failed"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= flags and "secure" not in flags  # plain HTTP on loopback
    assert "samesite=strict" in cookie.lower()
    value = browser.cookies[COOKIE]
    rows = _session_rows(dash)
    assert len(rows) == 1 and rows[0].user == "operator" and value not in (rows[0].sha256, rows[0].csrf)
    page = browser.get("/")
    assert page.status_code == 200 and "<span>operator · operator</span>" in page.text
    assert any(r["detail"].get("via") == "dashboard" for r in dash.audit_rows("login"))
    out = browser.post("/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert _session_rows(dash) == []
    # the old cookie, replayed, opens nothing
    replay = dash.browser()
    replay.cookies.set(COOKIE, value)
    assert replay.get("/").status_code == 303


def test_a_session_ends_when_idle_expired_revoked_or_its_user_disabled(dash: Dash) -> None:
    def signed_in(user: str) -> httpx.Client:
        browser = dash.browser(user)
        assert browser.get("/").status_code == 200
        return browser

    table = WebSessionRow.__table__
    browser = signed_in("viewer")
    with dash.engine.begin() as connection:  # nothing for longer than the idle timeout
        connection.execute(update(table).where(table.c.user == "viewer").values(seen_at=table.c.seen_at - IDLE_S - 1))
    assert browser.get("/").status_code == 303
    assert not [r for r in _session_rows(dash) if r.user == "viewer"]  # ended and removed

    browser = signed_in("viewer")
    with dash.engine.begin() as connection:  # past its absolute lifetime, however busy
        connection.execute(update(table).where(table.c.user == "viewer").values(expires_at=1.0))
    assert browser.get("/").status_code == 303

    browser = signed_in("operator")
    token_id = next(t["token_id"] for t in dash.people.tokens("operator"))
    dash.people.revoke(token_id)
    assert browser.get("/").status_code == 303

    browser = signed_in("admin")
    dash.people.disable("admin")
    assert browser.get("/").status_code == 303
    # and the revoked token or disabled user cannot sign in again
    for user in ("operator", "admin"):
        again = sign_in(dash.browser(), dash.tokens[user])
        assert again.status_code == 401 and "was not accepted" in again.text


def test_failed_sign_ins_are_rate_limited_per_address(dash: Dash) -> None:
    throttle: LoginThrottle = dash.app.state.dashboard.throttle
    browser = dash.browser()
    for _ in range(throttle.failures):
        assert sign_in(browser, "cft_guess").status_code == 401
    blocked = sign_in(browser, dash.tokens["viewer"])  # even the right token waits now
    assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
    assert int(blocked.headers["retry-after"]) >= 1
    assert any("too many failed sign-ins" in r["detail"]["reason"] for r in dash.audit_rows("refused"))


def test_a_login_post_without_the_forms_nonce_is_refused(dash: Dash) -> None:
    browser = dash.browser()
    form = browser.get("/login")
    forged = browser.post("/login", data={"token": dash.tokens["viewer"], "login_nonce": "not-it"})
    assert forged.status_code == 403 and COOKIE not in forged.cookies
    stranger = dash.browser()  # a cross-site page posting with a nonce it read elsewhere has no cookie
    assert stranger.post("/login", data={"token": dash.tokens["viewer"],
                                         "login_nonce": login_nonce(form.text)}).status_code == 403


def test_forged_and_viewer_posts_are_refused_with_a_403_page_and_audited(dash: Dash) -> None:
    drain = {"site": "s1", "action": "drain-worker", "target": "w1"}
    operator = dash.browser("operator")
    csrf = csrf_of(operator.get("/").text)
    for form, why in (({**drain}, "no token"), ({**drain, "csrf": "x" * len(csrf)}, "wrong token")):
        refused = operator.post("/actions", data=form)
        assert refused.status_code == 403, why
        assert "did not carry this session's CSRF token" in html.unescape(refused.text)
        assert "Traceback" not in refused.text
    viewer = dash.browser("viewer")
    refused = viewer.post("/actions", data={**drain, "csrf": csrf_of(viewer.get("/").text)})
    assert refused.status_code == 403 and "this needs operator" in refused.text
    anonymous = dash.browser()
    assert anonymous.post("/actions", data={**drain, "csrf": csrf}).status_code == 403
    reasons = [(r["actor"], r["detail"]["reason"]) for r in dash.audit_rows("refused")
               if r["subject"] == "POST /actions"]
    assert [actor for actor, _ in reasons] == ["operator", "operator", "viewer", "anonymous"]
    assert "CSRF" in reasons[0][1] and "needs operator" in reasons[2][1]
    with dash.engine.connect() as connection:
        assert connection.execute(select(CommandRow.__table__)).first() is None  # nothing was requested


def test_a_destructive_action_needs_the_typed_confirmation(dash: Dash) -> None:
    operator = dash.browser("operator")
    csrf = csrf_of(operator.get("/").text)
    refused = operator.post("/actions", data={"csrf": csrf, "site": "s1", "action": "restart-worker",
                                              "target": "w1", "confirm": "w2"})
    assert refused.status_code == 422 and "restart-worker is destructive" in refused.text
    with dash.engine.connect() as connection:
        assert connection.execute(select(CommandRow.__table__)).first() is None
    # confirmed, it is recorded and executed by the core (no signer here: it fails, and says why)
    done = operator.post("/actions", data={"csrf": csrf, "site": "s1", "action": "restart-worker", "target": "w1",
                                           "confirm": "w1"})
    assert done.status_code == 303 and done.headers["location"].startswith("/commands/")
    page = operator.get(done.headers["location"])
    assert page.status_code == 200 and "confirmed by typing the target" in page.text
    assert "failed" in page.text


def test_the_cookie_is_secure_over_tls_and_a_login_never_redirects_off_site(dash: Dash) -> None:
    browser = dash.browser()
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert sign_in(browser, dash.tokens["viewer"], target).headers["location"] == "/"
    # behind a TLS-terminating proxy on loopback (uvicorn trusts its X-Forwarded-Proto) the cookie is Secure
    tls = dash.browser()
    form = tls.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in form.headers["set-cookie"].lower()  # the form's nonce cookie too
    nonce = login_nonce(form.text)  # a browser sends a Secure cookie over TLS; this client must be told
    tls.cookies.clear()
    answer = tls.post("/login", headers={"X-Forwarded-Proto": "https", "Cookie": f"{LOGIN_COOKIE}={nonce}"},
                      data={"token": dash.tokens["viewer"], "login_nonce": nonce})
    assert answer.status_code == 303, answer.text
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    assert "secure" in cookie.lower()
