"""The centre's HTTP API (``/api/v1``): bearer tokens, one table of endpoint → role, one error mapping.

A thin adapter over :mod:`control_plane.people` and :mod:`control_plane.commands`: every route is a row
of :data:`ENDPOINT_ROLES` (a route without one is refused, default deny), its principal is checked
against that role before the handler runs, and tenant scoping is the core's (a command acts on one
tenant; listings show only the caller's tenants). Errors are mapped to HTTP in one place
(:data:`ERROR_STATUS`); bad input is a 422 whose message names the field. The fleet's read
endpoints (summary, sites, hosts, workers, queues, runs) are adapters over
:class:`control_plane.fleet.Fleet`, scoped to the caller's tenants.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at runtime, and the
# ``Caller`` dependency is local to ``create_app``, which string annotations could not resolve.

import html
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane import audit
from control_plane.alerts import actions as alert_actions
from control_plane.alerts.ack import AckKeyMissing, load_key, verify
from control_plane.audit import writing
from control_plane.commands import MAX_PAGE, REQUESTED, STATUSES, Commands, SignatureRefused
from control_plane.costs import Budgets
from control_plane.dashboard.web import Dashboard
from control_plane.errors import Conflict, ControlError, ControlInputError, Forbidden, NotFound, Unauthenticated
from control_plane.fleet import MAX_PAGE_SIZE, PAGE_SIZE, Fleet, Liveness
from control_plane.metrics import exposition, registry
from control_plane.people import People, Principal, Role
from control_plane.tables import SilenceRow

PREFIX = "/api/v1"
#: The largest seq a database integer holds (a larger ``after`` is bad input, not a driver overflow).
MAX_SEQ = 2**63 - 1
#: Every endpoint and the least role it needs; tenant limits are applied by what each one does.
ENDPOINT_ROLES: dict[tuple[str, str], Role] = {
    ("GET", f"{PREFIX}/me"): Role.VIEWER,
    ("GET", f"{PREFIX}/fleet"): Role.VIEWER,
    ("GET", f"{PREFIX}/sites"): Role.VIEWER,
    ("GET", f"{PREFIX}/hosts"): Role.VIEWER,
    ("GET", f"{PREFIX}/hosts/{{site_id}}/{{host}}/history"): Role.VIEWER,
    ("GET", f"{PREFIX}/workers"): Role.VIEWER,
    ("GET", f"{PREFIX}/queues"): Role.VIEWER,
    ("GET", f"{PREFIX}/runs"): Role.VIEWER,
    ("GET", f"{PREFIX}/runs/{{site_id}}/{{run_id}}"): Role.VIEWER,
    ("GET", f"{PREFIX}/commands"): Role.VIEWER,
    ("GET", f"{PREFIX}/commands/{{command_id}}"): Role.VIEWER,
    ("POST", f"{PREFIX}/commands"): Role.OPERATOR,
    ("POST", f"{PREFIX}/commands/{{command_id}}/approve"): Role.OPERATOR,
    # The audit holds every tenant's rows: admins of every tenant only (checked in the handler).
    ("GET", f"{PREFIX}/audit"): Role.ADMIN,
    # Every site's figures: viewers of every tenant (a scraper's token), checked in the handler.
    ("GET", "/metrics"): Role.VIEWER,
    # Alerts: a tenant's own and the fleet's (no tenant) are listed; acking one needs its tenant.
    ("GET", f"{PREFIX}/alerts"): Role.VIEWER,
    ("GET", f"{PREFIX}/alerts/{{alert_id}}"): Role.VIEWER,
    ("POST", f"{PREFIX}/alerts/{{alert_id}}/ack"): Role.OPERATOR,
    ("GET", f"{PREFIX}/silences"): Role.VIEWER,
    ("POST", f"{PREFIX}/silences"): Role.OPERATOR,
    ("DELETE", f"{PREFIX}/silences/{{silence_id}}"): Role.OPERATOR,
}
#: Routes that take no token: the signed ack URL is its own credential (single-purpose, per alert, expiring).
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({("GET", "/ack/{token}"), ("POST", "/ack/{token}")})
#: The one mapping from the control plane's errors to HTTP statuses; most specific first.
ERROR_STATUS: tuple[tuple[type[ControlError], int], ...] = (
    (ControlInputError, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (SignatureRefused, 409),
    (Conflict, 409),
    (ControlError, 500),
)


class SilenceRequest(BaseModel):
    """``POST /api/v1/silences``: alerts matching every matcher send nothing for ``duration_s``."""

    model_config = ConfigDict(extra="forbid")

    matchers: dict[StrictStr, StrictStr] = Field(min_length=1, max_length=8)
    reason: StrictStr = Field(min_length=1, max_length=2000)
    duration_s: float = Field(gt=0, le=alert_actions.MAX_SILENCE_S)


class CommandRequest(BaseModel):
    """``POST /api/v1/commands``: an action of the operator-actions table on one target at one site."""

    model_config = ConfigDict(extra="forbid")

    site: StrictStr
    action: StrictStr
    target: list[StrictStr] = Field(min_length=1, max_length=2)
    confirm: StrictStr | None = None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def create_app(engine: Engine, people: People, commands: Commands, liveness: Liveness | None = None,
               budgets: Budgets | None = None, ack_key_file: Path | None = None) -> FastAPI:
    """The API over one fleet database; ``commands`` carries the signer and the agent directory, ``liveness``
    the thresholds host states are judged with, ``budgets`` the cost page's thresholds, ``ack_key_file`` the
    key ``alerts serve`` signs ack URLs with (read per request: the emitter may make it after this process
    started)."""
    app = FastAPI(title="cinefleet control plane", version="1", openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=None, redoc_url=None)

    def principal(request: Request) -> Principal:
        """Authenticate, then require the role :data:`ENDPOINT_ROLES` gives this route (none: refused)."""
        route = request.scope.get("route")
        needed = ENDPOINT_ROLES.get((request.method, getattr(route, "path", "")))
        caller = people.authenticate(_bearer(request))
        try:
            if needed is None:
                raise Forbidden(f"{request.method} {request.url.path}: no role may use it")
            caller.require(needed, any_tenant=True)
        except Forbidden as exc:
            with writing(engine) as connection:
                commands.audit.append(connection, caller.user, "refused", f"{request.method} {request.url.path}",
                                      {"reason": str(exc)})
            raise
        return caller

    Caller = Annotated[Principal, Depends(principal)]

    @app.exception_handler(ControlError)
    def control_error(_request: Request, exc: ControlError) -> JSONResponse:
        status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    + (f" (value {e['input']!r})" if "input" in e and e["type"] != "missing" else "")
                    for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)

    @app.get(f"{PREFIX}/me")
    def me(caller: Caller) -> dict[str, Any]:
        return caller.as_dict()

    def fleet(caller: Principal) -> tuple[Fleet, list[str] | None]:
        """A read model judged now, and the caller's tenant scope (None: every tenant)."""
        session = Session(engine)
        scope = None if caller.tenants is None else sorted(caller.tenants)
        return Fleet(session, liveness), scope

    scrape = registry(engine, liveness or Liveness())

    @app.get("/metrics", response_class=Response)
    def metrics(caller: Caller) -> Response:
        """Prometheus text: replication per site, hosts per state, commands per status and outcome."""
        caller.require(Role.VIEWER, None)
        return Response(exposition(scrape), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(f"{PREFIX}/fleet")
    def summary(caller: Caller) -> dict[str, Any]:
        """Counts of sites by connection, hosts by state, workers by status, runs by status; the worst lag."""
        view, scope = fleet(caller)
        with view.session:
            return view.summary(scope).model_dump()

    @app.get(f"{PREFIX}/sites")
    def sites(caller: Caller) -> dict[str, Any]:
        """Every site: connected or disconnected (and why), cursor, backlog, replication lag, events/s."""
        view, scope = fleet(caller)
        with view.session:
            return {"sites": [s.model_dump() for s in view.sites(scope)]}

    @app.get(f"{PREFIX}/hosts")
    def hosts(caller: Caller, site: str | None = None,
              state: Annotated[str | None, Query(description="healthy, degraded, offline or disconnected.")] = None,
              ) -> dict[str, Any]:
        """Every host with its state at the centre, the reasons, and its latest report."""
        view, scope = fleet(caller)
        with view.session:
            return {"hosts": [h.model_dump() for h in view.hosts(scope, site_id=site, state=state)]}

    @app.get(f"{PREFIX}/hosts/{{site_id}}/{{host}}/history")
    def host_history(caller: Caller, site_id: str, host: str,
                     since: Annotated[float | None, Query(ge=0, description="Unix seconds.")] = None,
                     ) -> dict[str, Any]:
        """A host's bounded history of samples, oldest first (for graphs)."""
        view, scope = fleet(caller)
        with view.session:
            return {"samples": [s.model_dump() for s in view.host_history(site_id, host, since, scope)]}

    @app.get(f"{PREFIX}/workers")
    def workers(caller: Caller, site: str | None = None) -> dict[str, Any]:
        view, scope = fleet(caller)
        with view.session:
            return {"workers": [w.model_dump() for w in view.workers(scope, site_id=site)]}

    @app.get(f"{PREFIX}/queues")
    def queues(caller: Caller, site: str | None = None) -> dict[str, Any]:
        view, scope = fleet(caller)
        with view.session:
            return {"queues": [q.model_dump() for q in view.queues(scope, site_id=site)]}

    @app.get(f"{PREFIX}/runs")
    def runs(
        caller: Caller,
        status: Annotated[list[str] | None, Query(description="Repeatable.")] = None,
        site: str | None = None,
        tenant: str | None = None,
        project: Annotated[str | None, Query(description="The project bundle's hash.")] = None,
        submitted_from: Annotated[float | None, Query(ge=0, description="Unix seconds, inclusive.")] = None,
        submitted_to: Annotated[float | None, Query(ge=0, description="Unix seconds, exclusive.")] = None,
        after: Annotated[str | None, Query(max_length=512, description="The previous page's `next`.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    ) -> dict[str, Any]:
        """Runs of the caller's tenants, newest first, by keyset pages."""
        view, scope = fleet(caller)
        with view.session:
            page = view.runs(scope, status=status or (), site_id=site, tenant_id=tenant, project=project,
                             submitted_from=submitted_from, submitted_to=submitted_to, limit=limit, after=after)
            return page.model_dump()

    @app.get(f"{PREFIX}/runs/{{site_id}}/{{run_id}}")
    def run(caller: Caller, site_id: str, run_id: str) -> dict[str, Any]:
        """One run with its stages and costs, as the site replicated them."""
        view, scope = fleet(caller)
        with view.session:
            detail = view.run(site_id, run_id, scope)
        if detail is None:  # absent, or another tenant's: the same answer
            raise NotFound(f"run {run_id!r}: no such run at site {site_id!r}")
        return detail.model_dump()

    @app.post(f"{PREFIX}/commands", status_code=201)
    def post_command(caller: Caller, body: CommandRequest) -> dict[str, Any]:
        """Request a command; one that needs no approval is signed and sent at once, and its outcome returned."""
        command = commands.request(caller, body.action, body.target, body.site, body.confirm)
        if command.status == REQUESTED:
            command = commands.execute(command.command_id)
        return command.as_dict()

    @app.post(f"{PREFIX}/commands/{{command_id}}/approve")
    def approve(caller: Caller, command_id: str) -> dict[str, Any]:
        """Approve another person's command; it is then signed and sent, and its outcome returned."""
        commands.approve(caller, command_id)
        return commands.execute(command_id).as_dict()

    @app.get(f"{PREFIX}/commands/{{command_id}}")
    def get_command(caller: Caller, command_id: str) -> dict[str, Any]:
        command = commands.get(command_id)
        if not commands.visible(caller, command):  # another tenant's: as if it did not exist
            raise NotFound(f"command {command_id!r}: no such command")
        return command.as_dict()

    @app.get(f"{PREFIX}/commands")
    def list_commands(
        caller: Caller,
        site: str | None = None,
        status: Annotated[str | None, Query(description=f"One of {', '.join(STATUSES)}.")] = None,
        tenant: str | None = None,
        action: str | None = None,
        after: Annotated[str | None, Query(description="The last command id of the previous page.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        """Newest first, only of the caller's tenants; pass ``next`` as ``after`` for the following page."""
        page = commands.list(caller, site=site, status=status, tenant=tenant, action=action, after=after,
                             limit=limit)
        return {"commands": [c.as_dict() for c in page],
                "next": page[-1].command_id if len(page) == limit else None}

    @app.get(f"{PREFIX}/audit")
    def list_audit(
        caller: Caller,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="The last seq of the previous page.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """Audit rows in chain order, from ``after``; every tenant's, so for admins of every tenant."""
        caller.require(Role.ADMIN, None)
        if kind is not None and kind not in audit.KINDS:
            raise ControlInputError(f"kind: value {kind!r}: expected one of {', '.join(sorted(audit.KINDS))}")
        with engine.connect() as connection:
            rows = audit.entries(connection, after=after, limit=limit, kind=kind)
        return {"entries": [r.as_dict() for r in rows], "next": rows[-1].seq if len(rows) == limit else None}

    @app.get(f"{PREFIX}/alerts")
    def list_alerts(
        caller: Caller,
        status: Annotated[list[str] | None, Query(description="Repeatable: pending, firing, acked, silenced, "
                                                              "resolved.")] = None,
        site: str | None = None,
        alert_type: Annotated[str | None, Query(alias="type")] = None,
        limit: Annotated[int, Query(ge=1, le=alert_actions.MAX_LIST)] = 100,
    ) -> dict[str, Any]:
        """Alerts newest first: the caller's tenants' and the fleet's own (hosts, sites)."""
        scope = None if caller.tenants is None else sorted(caller.tenants)
        with Session(engine) as session:
            return {"alerts": alert_actions.list_alerts(session, scope, status=status or (), site_id=site,
                                                        alert_type=alert_type, limit=limit)}

    @app.get(f"{PREFIX}/alerts/{{alert_id}}")
    def get_alert(caller: Caller, alert_id: Annotated[int, PathParam(ge=1, le=MAX_SEQ)]) -> dict[str, Any]:
        """One alert with every notification sent for it and each delivery attempt."""
        with Session(engine) as session:
            row = alert_actions.get_alert(session, alert_id)
            if row.tenant_id is not None and not caller.allows_tenant(row.tenant_id):
                raise NotFound(f"alert {alert_id}: no such alert")  # another tenant's: as if absent
            return {**alert_actions.alert_view(row), "notifications": alert_actions.deliveries(session, alert_id)}

    @app.post(f"{PREFIX}/alerts/{{alert_id}}/ack")
    def ack_alert(caller: Caller, alert_id: Annotated[int, PathParam(ge=1, le=MAX_SEQ)]) -> dict[str, Any]:
        """Ack: nothing more is sent for the alert until it resolves; who and when are recorded and audited."""
        return alert_actions.ack(engine, alert_id, caller.user, via="api",
                                 tenant_check=lambda tenant: caller.require(Role.OPERATOR, tenant))

    @app.get(f"{PREFIX}/silences")
    def list_silences(caller: Caller, every: Annotated[bool, Query(alias="all")] = False) -> dict[str, Any]:
        """Silences in force (or every one with ``all=true``), newest first."""
        with Session(engine) as session:
            return {"silences": alert_actions.list_silences(session, active_at=None if every else time.time())}

    @app.post(f"{PREFIX}/silences", status_code=201)
    def post_silence(caller: Caller, body: SilenceRequest) -> dict[str, Any]:
        """Silence alerts matching every matcher; a tenant-limited operator must match one of its tenants."""
        caller.require(Role.OPERATOR, body.matchers.get("tenant"))
        return alert_actions.silence(engine, body.matchers, actor=caller.user, reason=body.reason,
                                     duration_s=body.duration_s)

    @app.delete(f"{PREFIX}/silences/{{silence_id}}")
    def delete_silence(caller: Caller, silence_id: Annotated[int, PathParam(ge=1, le=MAX_SEQ)]) -> dict[str, Any]:
        """Lift a silence now."""
        with Session(engine) as session:
            row = session.get(SilenceRow, silence_id)
            tenant = (row.matchers or {}).get("tenant") if row is not None else None
        caller.require(Role.OPERATOR, tenant)
        return alert_actions.unsilence(engine, silence_id, actor=caller.user)

    def grant(token: str) -> Any:
        if ack_key_file is None:
            raise NotFound("ack links are not served by this centre")
        try:
            key = load_key(ack_key_file)
        except AckKeyMissing:
            raise NotFound("ack links are not set up yet (`cinefleet alerts serve` makes the key)") from None
        return verify(key, token, time.time())

    @app.get("/ack/{token}", response_class=HTMLResponse)
    def ack_page(token: Annotated[str, PathParam(max_length=1024)]) -> HTMLResponse:
        """The page an ack link opens in a browser: what the alert is, and a button that acks it (a POST)."""
        granted = grant(token)
        with Session(engine) as session:
            row = alert_actions.get_alert(session, granted.alert_id)
            state = (f"Acked by {html.escape(row.acked_by or '')}." if row.status == "acked"
                     else "Already resolved." if row.status == "resolved" else "")
            summary = html.escape(f"[{row.severity}] {row.alert_type}: {row.summary}")
        form = "" if state else (f'<form method="post" action="/ack/{html.escape(token)}">'
                                 '<button type="submit">Ack</button></form>')
        return HTMLResponse(f"<!doctype html><title>Ack alert {granted.alert_id}</title>"
                            f"<h1>Alert {granted.alert_id}</h1><p>{summary}</p><p>{state}</p>{form}")

    @app.post("/ack/{token}", response_class=HTMLResponse)
    def ack_link(token: Annotated[str, PathParam(max_length=1024)]) -> HTMLResponse:
        """Ack through the signed link (ntfy's Ack button POSTs here); recorded as the receiver it was sent to."""
        granted = grant(token)
        row = alert_actions.ack(engine, granted.alert_id, f"{granted.receiver} (ack link)", via="link")
        return HTMLResponse(f"<!doctype html><title>Acked</title><h1>Alert {granted.alert_id} acked</h1>"
                            f"<p>by {html.escape(str(row['acked_by']))}</p>")

    for route in app.routes:  # every endpoint states its role in the published OpenAPI
        if isinstance(route, APIRoute):
            if any((method, route.path) in PUBLIC_ROUTES for method in route.methods or ()):
                route.description = f"{route.description}\n\nRole: none (its signed URL is the credential).".lstrip()
                continue
            roles = {ENDPOINT_ROLES.get((method, route.path)) for method in route.methods or ()}
            stated = ", ".join(sorted(r.label if r is not None else "none (refused)" for r in roles))
            route.description = f"{route.description}\n\nRole: {stated}.".lstrip()
    Dashboard(engine, people, commands, liveness, budgets=budgets).mount(app)  # the pages: their own table of roles
    return app
