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

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane import audit
from control_plane.audit import writing
from control_plane.commands import MAX_PAGE, REQUESTED, STATUSES, Commands, SignatureRefused
from control_plane.costs import Budgets
from control_plane.dashboard.web import Dashboard
from control_plane.errors import Conflict, ControlError, ControlInputError, Forbidden, NotFound, Unauthenticated
from control_plane.fleet import MAX_PAGE_SIZE, PAGE_SIZE, Fleet, Liveness
from control_plane.metrics import exposition, registry
from control_plane.people import People, Principal, Role

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
}
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
               budgets: Budgets | None = None) -> FastAPI:
    """The API over one fleet database; ``commands`` carries the signer and the agent directory, ``liveness``
    the thresholds host states are judged with."""
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

    for route in app.routes:  # every endpoint states its role in the published OpenAPI
        if isinstance(route, APIRoute):
            roles = {ENDPOINT_ROLES.get((method, route.path)) for method in route.methods or ()}
            stated = ", ".join(sorted(r.label if r is not None else "none (refused)" for r in roles))
            route.description = f"{route.description}\n\nRole: {stated}.".lstrip()
    Dashboard(engine, people, commands, liveness, budgets=budgets).mount(app)  # the pages: their own table of roles
    return app
