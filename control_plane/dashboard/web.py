"""The dashboard's HTTP adapter: sessions, the role and CSRF checks, rendering, and one error mapping to HTML.

Every page of :data:`~control_plane.dashboard.pages.PAGES` and every form of :data:`FORMS` goes
through the same steps: find the session (none: to the login page), check the row's least role
(refused: a 403 page and a ``refused`` audit row), for a form check the CSRF token against the
session's secret in constant time (wrong or missing: the same), then call the view or the core and
render. Operator actions call :class:`~control_plane.commands.Commands` exactly as
``POST /api/v1/commands`` does, so confirmation, approval, tenant limits and audit are the core's.

Errors become HTML pages here, in :data:`ERROR_PAGES` (the JSON API keeps its own mapping); an
unreachable database is a 503 page, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from control_plane.alerts import actions as alert_actions
from control_plane.audit import writing
from control_plane.commands import REQUESTED, Commands, SignatureRefused, action_row
from control_plane.costs import Budgets
from control_plane.dashboard.alert_pages import SILENCE_HOURS, whole_id
from control_plane.dashboard.glance import Glance
from control_plane.dashboard.live import Publisher
from control_plane.dashboard.pages import PAGES, Page, View
from control_plane.dashboard.sessions import LoginThrottle, Sessions, WebSession
from control_plane.errors import Conflict, ControlError, ControlInputError, Forbidden, NotFound, Unauthenticated
from control_plane.fleet import Fleet, Liveness
from control_plane.people import People, Principal, Role
from control_plane.tables import SilenceRow

#: The session cookie (a random id; the database holds its sha256).
COOKIE = "cinefleet_session"
#: The login form's double-submit cookie: the form must echo it (there is no session to hold a secret yet).
LOGIN_COOKIE = "cinefleet_login"
#: Every form the dashboard accepts and the least role it needs.
FORMS: dict[str, Role] = {
    "/logout": Role.VIEWER,
    "/actions": Role.OPERATOR,
    "/commands/{command_id}/approve": Role.OPERATOR,
    "/alerts/{alert_id}/ack": Role.OPERATOR,
    "/silences": Role.OPERATOR,
    "/silences/{silence_id}/unsilence": Role.OPERATOR,
}
#: The one mapping from the control plane's errors to the dashboard's error pages; most specific first.
ERROR_PAGES: tuple[tuple[type[Exception], int, str], ...] = (
    (ControlInputError, 422, "That request could not be understood"),
    (Unauthenticated, 401, "Please sign in"),
    (Forbidden, 403, "Not allowed"),
    (NotFound, 404, "Not found"),
    (SignatureRefused, 409, "The signer refused the command"),
    (Conflict, 409, "That conflicts with what is recorded"),
    (ControlError, 500, "The control plane could not do that"),
    (OperationalError, 503, "The fleet database is unreachable"),
    (InterfaceError, 503, "The fleet database is unreachable"),
)
#: Pages are the centre's own: no framing, scripts and styles from this origin only.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
API_PATHS = ("/api/", "/metrics")
log = logging.getLogger(__name__)


def when(seconds: float | None) -> Markup:
    """A ``<time>`` in UTC; the page's script rewrites its text in the viewer's zone (UTC stays on hover)."""
    if seconds is None:
        return Markup("<span class=muted>never</span>")
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    iso, shown = moment.isoformat(timespec="seconds").replace("+00:00", "Z"), moment.strftime("%Y-%m-%d %H:%M:%S")
    return Markup('<time datetime="{0}" title="{1} UTC">{1} UTC</time>').format(iso, shown)


def duration(seconds: float | None) -> str:
    """``3 s``, ``4 min``, ``2.5 h``: a span as an operator reads it."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``7.8 GiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while abs(n) >= 1024 and power < len(units) - 1:
        n, power = n / 1024, power + 1
    return f"{n:.0f} B" if power == 0 else f"{n:.1f} {units[power]}"


def _local(target: str | None) -> str:
    """Only a path on this site may follow a login (never ``//elsewhere`` or ``https://...``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Dashboard:
    """The pages over one fleet database; :meth:`mount` adds them to the API's app."""

    def __init__(self, engine: Engine, people: People, commands: Commands, liveness: Liveness | None = None, *,
                 sessions: Sessions | None = None, throttle: LoginThrottle | None = None,
                 publisher: Publisher | None = None, budgets: Budgets | None = None) -> None:
        self.engine, self.commands, self.liveness = engine, commands, liveness or Liveness()
        self.budgets = budgets or Budgets()
        self.sessions = sessions or Sessions(engine, people, commands.audit)
        self.throttle = throttle or LoginThrottle()
        self.live = publisher or Publisher(engine, self.liveness)
        self.glance = Glance(engine, self.liveness)
        self.templates = Environment(loader=PackageLoader("control_plane.dashboard", "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True),
                                     undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.globals.update(when=when, duration=duration, size=size, Role=Role,
                                      confirms=lambda action: action_row(action).destructive)
        self.templates.filters["disk_fraction"] = lambda d: d["used_bytes"] / d["total_bytes"] if d.get(
            "total_bytes") else 0.0

    # -- mounting -------------------------------------------------------------------------------------------------

    def mount(self, app: FastAPI) -> None:
        """Add every page, form, the event stream and the static files; HTML 404s outside the API."""
        app.state.dashboard = self  # its sessions and publisher, for whoever holds the app (tests, benchmarks)
        for page in PAGES:
            app.add_api_route(page.path, self._page_endpoint(page), methods=["GET"], include_in_schema=False)
        app.add_api_route("/login", self._login_form, methods=["GET"], include_in_schema=False)
        app.add_api_route("/login", self._login, methods=["POST"], include_in_schema=False)
        for path, handler in (("/logout", self._logout), ("/actions", self._action),
                              ("/commands/{command_id}/approve", self._approve),
                              ("/alerts/{alert_id}/ack", self._ack), ("/silences", self._silence),
                              ("/silences/{silence_id}/unsilence", self._unsilence)):
            app.add_api_route(path, self._form_endpoint(path, handler), methods=["POST"], include_in_schema=False)
        app.add_api_route("/events", self._events, methods=["GET"], include_in_schema=False)
        app.mount("/static", StaticFiles(packages=[("control_plane.dashboard", "static")]), name="static")
        app.add_exception_handler(StarletteHTTPException, self._http_error)  # type: ignore[arg-type]

    # -- rendering ------------------------------------------------------------------------------------------------

    def render(self, request: Request, template: str, context: Mapping[str, Any], *, status: int = 200,
               session: WebSession | None = None, title: str = "") -> HTMLResponse:
        principal = session.principal if session else None
        nav = [p for p in PAGES if p.nav and principal is not None and principal.role >= p.role]
        body = self.templates.get_template(template).render(
            **context, me=principal, csrf=session.csrf if session else "", nav=nav, here=request.url.path, title=title)
        return HTMLResponse(body, status_code=status, headers=HEADERS)

    def error(self, request: Request, exc: Exception, session: WebSession | None = None) -> HTMLResponse:
        status, heading = next((code, text) for kind, code, text in ERROR_PAGES if isinstance(exc, kind))
        message = str(exc) if status != 503 else ("The centre cannot reach its database right now; the fleet "
                                                  "keeps working. Try again in a moment.")
        return self.render(request, "error.html", {"status": status, "heading": heading, "message": message},
                           status=status, session=session if status != 503 else None, title=heading)

    async def _http_error(self, request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown paths: the API keeps FastAPI's JSON; everything else gets a page that says where to go."""
        if request.url.path.startswith(API_PATHS):
            return await http_exception_handler(request, exc)
        heading = "Not found" if exc.status_code == 404 else "Request refused"
        message = (f"There is no page at {request.url.path}. The fleet overview is at /." if exc.status_code == 404
                   else str(exc.detail))
        return self.render(request, "error.html", {"status": exc.status_code, "heading": heading,
                                                   "message": message}, status=exc.status_code, title=heading)

    # -- the checks every request goes through --------------------------------------------------------------------

    def _refuse(self, actor: str, request: Request, reason: str) -> None:
        """A refused page or form is an audit row, as a refused API call is."""
        with writing(self.engine) as connection:
            self.commands.audit.append(connection, actor, "refused", f"{request.method} {request.url.path}",
                                       {"reason": reason, "via": "dashboard", "address": _address(request)})

    def _require(self, request: Request, principal: Principal, role: Role) -> None:
        try:
            principal.require(role, any_tenant=True)
        except Forbidden as exc:
            self._refuse(principal.user, request, str(exc))
            raise

    def _guarded(self, request: Request, run: Callable[[WebSession | None], Response]) -> Response:
        """Run a handler; map what it raises to an error page (with the session's navigation when known)."""
        session: WebSession | None = None
        try:
            session = self.sessions.find(request.cookies.get(COOKIE))
            return run(session)
        except (ControlError, OperationalError, InterfaceError) as exc:
            return self.error(request, exc, session)
        except Exception:  # a bug: logged with its traceback here, a plain page for the person
            log.exception("dashboard: %s %s failed", request.method, request.url.path)
            return self.render(request, "error.html", {
                "status": 500, "heading": "Something went wrong",
                "message": "The centre hit an unexpected error showing this page; its log has the details."},
                status=500, title="Error")

    # -- pages ----------------------------------------------------------------------------------------------------

    def _page_endpoint(self, page: Page) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await run_in_threadpool(self._guarded, request, lambda s: self._show(request, page, s))

        endpoint.__name__ = f"page_{page.template.removesuffix('.html')}"
        return endpoint

    def _show(self, request: Request, page: Page, session: WebSession | None) -> Response:
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303, headers=HEADERS)
        self._require(request, session.principal, page.role)
        with Session(self.engine) as db:
            view = View(session.principal, Fleet(db, self.liveness), self.engine, self.commands,
                        request.query_params, request.path_params, self.glance, self.budgets)
            context = page.view(view)
        return self.render(request, page.template, context, session=session, title=page.title)

    # -- login and logout -----------------------------------------------------------------------------------------

    def _login_page(self, request: Request, *, status: int = 200, problem: str = "",
                    next_path: str = "/") -> HTMLResponse:
        nonce = secrets.token_urlsafe(24)
        response = self.render(request, "login.html", {"login_nonce": nonce, "problem": problem,
                                                        "next_path": _local(next_path)},
                               status=status, title="Sign in")
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/login")
        return response

    async def _login_form(self, request: Request) -> Response:
        return self._login_page(request, next_path=request.query_params.get("next", "/"))

    async def _login(self, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._sign_in, request, form)

    def _sign_in(self, request: Request, form: FormData) -> Response:
        address, next_path = _address(request), _local(str(form.get("next") or "/"))
        echoed, cookie = form.get("login_nonce"), request.cookies.get(LOGIN_COOKIE, "")
        try:
            if not (isinstance(echoed, str) and cookie and secrets.compare_digest(echoed, cookie)):
                self._refuse("anonymous", request, "login form without its CSRF token (a cross-site post?)")
                return self._login_page(request, status=403, next_path=next_path,
                                        problem="The sign-in form expired or did not come from this page; "
                                                "please try again.")
            wait = self.throttle.retry_after(address)
            if wait:
                self._refuse("anonymous", request, f"too many failed sign-ins from {address}")
                response = self._login_page(request, status=429, next_path=next_path,
                                            problem=f"Too many failed sign-ins from your address; wait "
                                                    f"{wait:.0f} s and try again.")
                response.headers["Retry-After"] = str(int(wait) + 1)
                return response
            token = form.get("token")
            try:
                session_id, _session = self.sessions.open(token if isinstance(token, str) else "", address)
            except Unauthenticated:
                self.throttle.failed(address)
                return self._login_page(request, status=401, next_path=next_path,
                                        problem="That token was not accepted: it is unknown, revoked, or its "
                                                "user is disabled. Ask an admin for a token "
                                                "(cinefleet control token create USER).")
        except (OperationalError, InterfaceError) as exc:
            return self.error(request, exc)
        redirect = RedirectResponse(next_path, status_code=303, headers=HEADERS)
        redirect.set_cookie(COOKIE, session_id, max_age=int(self.sessions.lifetime_s), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        redirect.delete_cookie(LOGIN_COOKIE, path="/login")
        return redirect

    # -- forms ----------------------------------------------------------------------------------------------------

    def _form_endpoint(self, path: str, handler: Callable[[Request, WebSession, FormData], Response]
                       ) -> Callable[[Request], Any]:
        role = FORMS[path]

        async def endpoint(request: Request) -> Response:
            form = await request.form()
            return await run_in_threadpool(self._guarded, request, lambda s: self._submit(request, s, form, role,
                                                                                          handler))

        endpoint.__name__ = f"form_{handler.__name__.strip('_')}"
        return endpoint

    def _submit(self, request: Request, session: WebSession | None, form: FormData, role: Role,
                handler: Callable[[Request, WebSession, FormData], Response]) -> Response:
        if session is None:
            self._refuse("anonymous", request, "a form posted without a live session")
            raise Forbidden("your session has ended (signed out, expired, or its token was revoked); sign in and "
                            "try again")
        token = form.get("csrf")
        if not session.csrf_ok(token if isinstance(token, str) else None):
            self._refuse(session.principal.user, request, "CSRF token missing or wrong (a forged or stale form)")
            raise Forbidden("this form did not carry this session's CSRF token, so it was refused: reload the page "
                            "and try again")
        self._require(request, session.principal, role)
        return handler(request, session, form)

    def _logout(self, request: Request, session: WebSession, form: FormData) -> Response:
        self.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/")
        return response

    def _action(self, request: Request, session: WebSession, form: FormData) -> Response:
        """An operator action from a button: the same request → execute path as ``POST /api/v1/commands``."""
        values = [v for v in form.getlist("target") if isinstance(v, str)]
        confirm = form.get("confirm")
        command = self.commands.request(session.principal, str(form.get("action") or ""), values,
                                        str(form.get("site") or ""),
                                        confirm if isinstance(confirm, str) and confirm else None)
        if command.status == REQUESTED:
            command = self.commands.execute(command.command_id)
        return RedirectResponse(f"/commands/{command.command_id}", status_code=303, headers=HEADERS)

    def _approve(self, request: Request, session: WebSession, form: FormData) -> Response:
        command_id = request.path_params["command_id"]
        self.commands.approve(session.principal, command_id)
        self.commands.execute(command_id)
        return RedirectResponse(f"/commands/{command_id}", status_code=303, headers=HEADERS)

    def _tenant_check(self, request: Request, principal: Principal) -> Callable[[str | None], None]:
        """The API's per-tenant check for an alert action; a refusal is audited as a refused page is."""
        def check(tenant: str | None) -> None:
            try:
                principal.require(Role.OPERATOR, tenant)
            except Forbidden as exc:
                self._refuse(principal.user, request, str(exc))
                raise
        return check

    def _ack(self, request: Request, session: WebSession, form: FormData) -> Response:
        """Ack from the page: the same core call as ``POST /api/v1/alerts/{id}/ack`` and ``cinefleet alerts ack``."""
        alert_id = whole_id(request.path_params["alert_id"], "alert id")
        alert_actions.ack(self.engine, alert_id, session.principal.user, via="dashboard",
                          tenant_check=self._tenant_check(request, session.principal))
        return RedirectResponse(f"/alerts/{alert_id}", status_code=303, headers=HEADERS)

    def _silence(self, request: Request, session: WebSession, form: FormData) -> Response:
        """A silence from the form's matchers, length and reason, through the API's core call and checks."""
        matchers: dict[str, str] = {}
        for name, value in zip(form.getlist("field"), form.getlist("value"), strict=False):
            name, value = str(name).strip(), str(value).strip()
            if not name and not value:
                continue
            if name in matchers:
                raise ControlInputError(f"matcher {name}: given twice; expected each field once")
            matchers[name] = value
        hours = str(form.get("hours") or "")
        if hours not in {str(h) for h in SILENCE_HOURS}:
            raise ControlInputError(f"hours: value {hours[:20]!r}: expected one of "
                                    f"{', '.join(str(h) for h in SILENCE_HOURS)}")
        self._tenant_check(request, session.principal)(matchers.get("tenant"))
        alert_actions.silence(self.engine, matchers, actor=session.principal.user, reason=str(form.get("reason") or ""),
                              duration_s=int(hours) * 3600.0)
        return RedirectResponse("/alerts#silenced", status_code=303, headers=HEADERS)

    def _unsilence(self, request: Request, session: WebSession, form: FormData) -> Response:
        """Lift a silence: the API's ``DELETE /api/v1/silences/{id}`` path (a tenant's operator only its own)."""
        silence_id = whole_id(request.path_params["silence_id"], "silence id")
        with Session(self.engine) as db:
            row = db.get(SilenceRow, silence_id)
            tenant = (row.matchers or {}).get("tenant") if row is not None else None
        self._tenant_check(request, session.principal)(tenant)
        alert_actions.unsilence(self.engine, silence_id, actor=session.principal.user)
        return RedirectResponse("/alerts#silenced", status_code=303, headers=HEADERS)

    # -- live updates ---------------------------------------------------------------------------------------------

    async def _events(self, request: Request) -> Response:
        session = await run_in_threadpool(self._guarded_session, request)
        if not isinstance(session, WebSession):
            return session
        try:
            return await self.live.stream(request, session.principal)
        except ControlError as exc:
            return self.error(request, exc, session)

    def _guarded_session(self, request: Request) -> WebSession | Response:
        """The viewer's session for the event stream; a 401 page without one (a stream cannot redirect)."""
        try:
            session = self.sessions.find(request.cookies.get(COOKIE))
            if session is None:
                raise Unauthenticated("sign in to receive live updates")
            return session
        except (ControlError, OperationalError, InterfaceError) as exc:
            return self.error(request, exc)
