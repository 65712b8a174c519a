"""``cinefleet fleet ACTION|approve|commands|audit|sites|hosts|workers|queues|runs|run``: the fleet through the
centre's API.

Unlike ``cinefleet ops`` (which signs with a key file and talks to one agent), these hold no key:
they send the request with the caller's token (``CINEFLEET_TOKEN``, never an option, so it stays
out of process listings) to ``--control URL`` (or ``CINEFLEET_CONTROL``), and the centre checks the
role, the confirmation and the approval, has the command signed and sent, and answers with the
outcome. Exit codes are those of ``cinefleet ops``: 0 done (or awaiting approval), 2 invalid input,
4 refused by the site or in the wrong state, 5 refused by the centre's roles, the signer or the
agent, 7 the centre or the agent unreachable, 1 anything else.
"""

# No ``from __future__ import annotations``: typer reads the signatures of the commands made per row
# of the actions table at runtime, and their help texts are built from that row.

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Annotated, Any

import typer

from control_plane.errors import (
    Conflict,
    ControlError,
    ControlInputError,
    Forbidden,
    NotFound,
    Unauthenticated,
    Unreachable,
)
from protos.actions import ACTIONS, OperatorAction

TOKEN_ENV = "CINEFLEET_TOKEN"
CONTROL_ENV = "CINEFLEET_CONTROL"
DEFAULT_TIMEOUT_S = 60.0

fleet_app = typer.Typer(help=f"The fleet through the control plane's API (your token in ${TOKEN_ENV}).",
                        no_args_is_help=True)

ControlOption = Annotated[str, typer.Option("--control", envvar=CONTROL_ENV,
                                            help="The centre's base URL, e.g. http://127.0.0.1:8080.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the centre's answer as JSON.")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for the centre's answer.")]


class SiteRefused(Conflict):
    """Raised when the site refused a command the agent verified (a missing target, the wrong state)."""


class CommandRejected(Forbidden):
    """Raised when the signer or the agent refused a command; nothing ran."""


class CommandFailed(ControlError):
    """Raised when a command was carried to the agent but failed there."""


#: The one mapping from the API's HTTP statuses to the errors ``cinefleet`` turns into exit codes.
HTTP_ERRORS: dict[int, type[ControlError]] = {400: ControlInputError, 401: Unauthenticated, 403: Forbidden,
                                              404: NotFound, 409: Conflict, 422: ControlInputError}


class ControlApi:
    """A small client of ``/api/v1`` (stdlib only: the centre's CLI needs no HTTP library)."""

    def __init__(self, url: str, token: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise ControlInputError(f"--control: value {url!r}: expected an http:// or https:// URL")
        if not token:
            raise ControlInputError(f"${TOKEN_ENV}: not set: expected your token (`cinefleet control token create`)")
        self.url, self._token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> dict[str, Any]:
        """The decoded JSON answer; an error status raises its error with the centre's message."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.url}/api/v1{path}" + (f"?{urllib.parse.urlencode(params, doseq=True)}" if params else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise HTTP_ERRORS.get(exc.code, ControlError)(f"centre: {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"centre at {self.url}: {reason}") from None


def _api(control: str, timeout: float) -> ControlApi:
    return ControlApi(control, os.environ.get(TOKEN_ENV), timeout)


def report(command: dict[str, Any], as_json: bool) -> None:
    """Print a command's state and raise the error its outcome means (none when done or awaiting approval)."""
    if as_json:
        typer.echo(json.dumps(command, sort_keys=True))
    what = (f"{command['action']} {' '.join(command['target'])} at site {command['site_id']}"
            f"{' on ' + command['host'] if command.get('host') else ''} [command {command['command_id']}]")
    status, outcome, detail = command["status"], command.get("outcome") or "", command.get("detail") or ""
    if status == "succeeded":
        if not as_json:
            typer.echo(f"executed {what}: {detail}")
        return
    if status == "awaiting_approval":
        if not as_json:
            typer.echo(f"awaiting a second person's approval: {what}; they run "
                       f"`cinefleet fleet approve {command['command_id']}`")
        return
    if outcome.startswith("OUTCOME_REFUSED"):
        raise SiteRefused(f"refused {what}: {detail}")
    if status == "refused" or outcome.startswith("OUTCOME_REJECTED"):
        raise CommandRejected(f"rejected {what}: {outcome}: {detail}")
    if outcome.startswith("UNKNOWN_TARGET"):
        raise NotFound(f"not sent {what}: {detail}")
    if outcome.startswith(("UNREACHABLE", "SIGNER_UNAVAILABLE", "NO_AGENT")):
        raise Unreachable(f"not delivered {what}: {outcome}: {detail}")
    raise CommandFailed(f"failed {what}: {status} {outcome}: {detail}")


def _action_command(row: OperatorAction) -> Callable[..., None]:
    def command(
        target: Annotated[list[str], typer.Argument(help=f"The target: {row.target.shape}.")],
        site: Annotated[str, typer.Option("--site", help="The site the target is at.")],
        control: ControlOption,
        confirm: Annotated[str | None, typer.Option(
            "--confirm", help="The target's id, typed again" + (" (required: this action is destructive)."
                                                                if row.destructive else "."))] = None,
        timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
        as_json: JsonOption = False,
    ) -> None:
        answer = _api(control, timeout).call("POST", "/commands", {"site": site, "action": row.cli,
                                                                   "target": target, "confirm": confirm})
        report(answer, as_json)

    command.__doc__ = f"{row.summary} Through the centre; exit codes as `cinefleet ops`."
    command.__name__ = row.cli.replace("-", "_")
    return command


for _row in ACTIONS:
    fleet_app.command(_row.cli)(_action_command(_row))


@fleet_app.command("approve")
def approve(
    command_id: Annotated[str, typer.Argument(help="The command awaiting approval.")],
    control: ControlOption,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Approve another person's command; the centre then signs and sends it and prints the outcome."""
    report(_api(control, timeout).call("POST", f"/commands/{urllib.parse.quote(command_id, safe='')}/approve"),
           as_json)


@fleet_app.command("commands")
def commands(
    control: ControlOption,
    site: Annotated[str | None, typer.Option(help="Only this site's.")] = None,
    status: Annotated[str | None, typer.Option(help="Only commands in this status.")] = None,
    after: Annotated[str | None, typer.Option(help="The last command id of the previous page.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Commands, newest first, of your tenants."""
    page = _api(control, timeout).call("GET", "/commands", query={"site": site, "status": status, "after": after,
                                                                  "limit": limit})
    if as_json:
        typer.echo(json.dumps(page, sort_keys=True))
        return
    for c in page["commands"]:
        typer.echo(f"{c['command_id']}  {c['status']:<17} {c['action']:<15} {' '.join(c['target']):<24} "
                   f"{c['site_id']:<10} by {c['requester']}{' approved by ' + c['approver'] if c['approver'] else ''}"
                   f"{'  ' + c['outcome'] if c['outcome'] else ''}")
    if page["next"]:
        typer.echo(f"more: --after {page['next']}")


@fleet_app.command("audit")
def audit(
    control: ControlOption,
    after: Annotated[int, typer.Option(help="The last seq of the previous page.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
    kind: Annotated[str | None, typer.Option(help="Only rows of this kind (request, approval, refused, ...).")] =
    None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """The centre's audit rows in chain order (admins of every tenant)."""
    page = _api(control, timeout).call("GET", "/audit", query={"after": after, "limit": limit, "kind": kind})
    if as_json:
        typer.echo(json.dumps(page, sort_keys=True))
        return
    for e in page["entries"]:
        typer.echo(f"{e['seq']:>8}  {e['kind']:<12} {e['actor']:<16} {e['subject']}  "
                   f"{json.dumps(e['detail'], sort_keys=True)}")
    if page["next"]:
        typer.echo(f"more: --after {page['next']}")


def _listing(control: str, timeout: float, path: str, key: str, query: dict[str, Any], as_json: bool,
             line: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """GET a listing and print it: the whole answer as JSON, or one line per item."""
    page = _api(control, timeout).call("GET", path, query=query)
    if as_json:
        typer.echo(json.dumps(page, sort_keys=True))
    else:
        for item in page[key]:
            typer.echo(line(item))
    return page


@fleet_app.command("sites")
def sites(control: ControlOption, timeout: TimeoutOption = DEFAULT_TIMEOUT_S, as_json: JsonOption = False) -> None:
    """Every site: connected or disconnected (and why), cursor, backlog, replication lag."""
    _listing(control, timeout, "/sites", "sites", {}, as_json, lambda s: (
        f"{s['site_id']:<16} {s['connection']:<12} cursor {s['cursor']} backlog {s['backlog']} lag "
        f"{'-' if s['lag_s'] is None else format(s['lag_s'], '.2f') + ' s'} hosts {s['hosts']}"
        f"{'  (' + s['reason'] + ')' if s['reason'] else ''}"))


@fleet_app.command("hosts")
def hosts(control: ControlOption, site: Annotated[str | None, typer.Option(help="Only this site's.")] = None,
          state: Annotated[str | None, typer.Option(help="Only hosts in this state.")] = None,
          timeout: TimeoutOption = DEFAULT_TIMEOUT_S, as_json: JsonOption = False) -> None:
    """Every host with its state at the centre and the reasons."""
    _listing(control, timeout, "/hosts", "hosts", {"site": site, "state": state}, as_json, lambda h: (
        f"{h['site_id'] + '/' + h['host']:<28} {h['state']:<12} {'; '.join(h['reasons'])}"))


@fleet_app.command("workers")
def workers(control: ControlOption, site: Annotated[str | None, typer.Option(help="Only this site's.")] = None,
            timeout: TimeoutOption = DEFAULT_TIMEOUT_S, as_json: JsonOption = False) -> None:
    """Every worker as its site last replicated it."""
    _listing(control, timeout, "/workers", "workers", {"site": site}, as_json, lambda w: (
        f"{w['site_id'] + '/' + w['name']:<28} {w['status']:<10} host {w['host']:<16} "
        f"{w.get('current_job') or ''}{'  ' + w['refused'] if w.get('refused') else ''}"))


@fleet_app.command("queues")
def queues(control: ControlOption, site: Annotated[str | None, typer.Option(help="Only this site's.")] = None,
           timeout: TimeoutOption = DEFAULT_TIMEOUT_S, as_json: JsonOption = False) -> None:
    """Every queue of every site: paused or not, completed count."""
    _listing(control, timeout, "/queues", "queues", {"site": site}, as_json, lambda q: (
        f"{q['site_id'] + '/' + q['name']:<28} {'paused' if q['paused'] else 'running':<8} "
        f"completed {q['completed']}"))


@fleet_app.command("runs")
def runs(
    control: ControlOption,
    status: Annotated[list[str] | None, typer.Option(help="Only runs in this status; repeatable.")] = None,
    site: Annotated[str | None, typer.Option(help="Only this site's.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
    project: Annotated[str | None, typer.Option(help="Only runs of this project bundle hash.")] = None,
    after: Annotated[str | None, typer.Option(help="The previous page's `next`.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Runs of your tenants, newest first."""
    page = _listing(control, timeout, "/runs", "items", {"status": status, "site": site, "tenant": tenant,
                                                          "project": project, "after": after, "limit": limit},
                    as_json, lambda r: f"{r['site_id'] + '/' + r['run_id']:<40} {r['status']:<10} "
                                       f"tenant {r['tenant_id']}")
    if page["next"] and not as_json:
        typer.echo(f"more: --after {page['next']}")


@fleet_app.command("run")
def run(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    site: Annotated[str, typer.Option("--site", help="The site the run is at.")],
    control: ControlOption,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """One run with its stages, as its site replicated them."""
    quote = urllib.parse.quote
    detail = _api(control, timeout).call("GET", f"/runs/{quote(site, safe='')}/{quote(run_id, safe='')}")
    if as_json:
        typer.echo(json.dumps(detail, sort_keys=True))
        return
    typer.echo(f"run {detail['site_id']}/{detail['run_id']} {detail['status']} tenant {detail['tenant_id']}")
    for s in detail["stages"]:
        typer.echo(f"  {s['stage_id']:<40} {s['status']:<10} attempts {s['attempts']} {s.get('worker') or ''}")
