"""The site's commands: ``cinefleet site ...``, ``cinefleet worker``, ``cinefleet submit``, ``cinefleet runs``.

Every command finds its site through ``--site ID [--data-dir DIR]`` (the ``site.json`` that
``site serve`` writes). ``--json`` prints what a program can read. The operator controls
(``site drain-worker`` ...) are made from the table of operator actions
(``protos.actions.ACTIONS``), one command per row.

Commands raise the site's errors (``ControlRefused``, ``RunNotCompleted``, ``SiteError``,
``InputError``) and print nothing about them: ``cinefleet`` turns each into its message and
exit code in one place (``cinefleet.cli.EXIT_CODES``).
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.errors import InputError
from protos.actions import ACTIONS, QUEUES, OperatorAction
from site_scheduler.config import (
    DEFAULT_HEARTBEAT_TTL_S,
    DEFAULT_REDIS_TIMEOUT_S,
    DEFAULT_TENANT,
    default_data_dir,
    read_endpoints,
)
from site_scheduler.errors import RUN_ENDINGS, RunFailed

site_app = typer.Typer(help="Run and operate a site.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs on a site and their stages.", no_args_is_help=True)

SiteOption = Annotated[str, typer.Option("--site", help="Site id.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Site data folder (default per user).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
#: Seconds between two looks at a waited-for run's stages, for the progress line.
PROGRESS_POLL_S = 0.5


def _client(site: str, data_dir: Path | None) -> Any:
    from site_scheduler.client import SiteClient

    return SiteClient(read_endpoints(site, data_dir or default_data_dir(site)))


def _print(value: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(value, indent=2, default=str))
    else:
        for line in lines:
            typer.echo(line)


@site_app.command("serve")
def serve(
    site: SiteOption,
    data_dir: DataDirOption = None,
    redis_url: Annotated[str | None, typer.Option(help="Use this Redis instead of starting one.")] = None,
    db_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the site database.")] = None,
    api_port: Annotated[int | None, typer.Option(min=0, max=65535, help="Serve the HTTP API on "
                                                 "127.0.0.1:PORT (0 picks a free port; site.json says which); "
                                                 "callers send the token in DATA_DIR/api.token.")] = None,
    tenant: Annotated[str, typer.Option(help="The tenant every run submitted to this site renders for, "
                                        "whatever its project file claims.")] = DEFAULT_TENANT,
    project_root: Annotated[list[Path] | None, typer.Option(
        "--project-root", help="A folder the HTTP API takes project files from (repeatable; none: the API "
        "takes no project by path).")] = None,
    control: Annotated[str | None, typer.Option(help="The control plane's HOST:PORT: ship the outbox there (the "
                                                "site works the same without it, or while it is away).")] = None,
    control_token_file: Annotated[Path | None, typer.Option(help="The site's token from `cinefleet control site "
                                                            "add` (default DATA_DIR/control.token).")] = None,
    repin_builds: Annotated[bool, typer.Option(
        "--repin-builds", help="Pin the ffmpeg and espeak-ng builds this host has, replacing the site's "
        "earlier pins (after upgrading them on every worker); workers with others take no media work.")] = False,
    heartbeat_ttl: Annotated[float, typer.Option(help="Seconds a worker's heartbeat lives (2 to 3600): a worker "
                                                 "unheard this long is offline, its stages are sent again, and it "
                                                 "gives up its own job.")] = DEFAULT_HEARTBEAT_TTL_S,
    redis_timeout: Annotated[float, typer.Option(help="Seconds the site's processes wait on one Redis reply "
                                                 "before they treat Redis as stalled and retry (0.5 to 60).")] =
    DEFAULT_REDIS_TIMEOUT_S,
) -> None:
    """Start the site's scheduler (and its Redis, unless --redis-url is given)."""
    from site_scheduler.service import serve as run

    run(site, data_dir or default_data_dir(site), redis_url, db_url, api_port=api_port, tenant=tenant,
        project_roots=project_root or [], control=control, control_token_file=control_token_file,
        repin_builds=repin_builds, heartbeat_ttl_s=heartbeat_ttl, redis_timeout_s=redis_timeout)


@site_app.command("outbox")
def outbox_command(site: SiteOption, data_dir: DataDirOption = None,
                   since: Annotated[int, typer.Option(help="Print events after this sequence number.")] = 0) -> None:
    """Print the outbox as JSON lines, in sequence order."""
    client = _client(site, data_dir)
    for event in client.outbox(since):
        typer.echo(json.dumps(event, sort_keys=True, default=str))


@site_app.command("workers")
def workers(site: SiteOption, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Workers with their status and current job, and why one takes no media work (its builds differ)."""
    rows = _client(site, data_dir).workers()
    _print(rows, as_json, [f"{w['name']:<20} {w['status']:<9} {w['host']}:{w['pid']:<8} "
                           f"{w['current_job'] or '-'}" + (f"  refused: {w['refused']}" if w["refused"] else "")
                           for w in rows])


@site_app.command("queues")
def queues(site: SiteOption, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Per queue: paused, waiting, depth, in flight, delayed, dead, throughput, drain estimate."""
    rows = _client(site, data_dir).queues()
    _print(rows, as_json, [f"{q['queue']:<18} {'paused' if q['paused'] else 'running':<8} waiting {q['waiting']:<4} "
                           f"depth {q['depth']:<4} in flight {q['in_flight']:<3} delayed {q['delayed']:<3} "
                           f"dead {q['dead']:<3} {q['throughput_per_hour']} jobs/h, drains in "
                           f"{'unknown' if q['drain_eta_s'] is None else str(q['drain_eta_s']) + ' s'}"
                           for q in rows])


def _control(site: str, data_dir: Path | None, action: str, as_json: bool, **args: Any) -> None:
    message = _client(site, data_dir).control(action, **args)
    _print({"action": action, **args, "message": message}, as_json, [message])


#: Options of the site controls beyond the target's ids (``OperatorAction.options``), as typed here.
_CONTROL_OPTIONS: dict[str, Any] = {
    "deadline": Annotated[float | None, typer.Option(
        help="Seconds in-flight jobs may still run; then they are requeued on another worker.")],
}


def _control_command(row: OperatorAction) -> Callable[..., None]:
    """``cinefleet site ROW.cli IDS... [options]``: the site control of one operator action.

    Its signature (what typer reads) is built from the row: one argument per target id, one
    option per site-only option, then ``--site``, ``--data-dir`` and ``--json``.
    """

    def command(*, site: str, data_dir: Path | None, as_json: bool, **given: Any) -> None:
        _control(site, data_dir, row.control, as_json, **{k: v for k, v in given.items() if v is not None})

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter(name, keyword, annotation=Annotated[str, typer.Argument(metavar=name.upper())])
                  for name in row.target.arguments]
    parameters += [inspect.Parameter(name, keyword, annotation=_CONTROL_OPTIONS[name], default=None)
                   for name in row.options]
    parameters += [inspect.Parameter("site", keyword, annotation=SiteOption),
                   inspect.Parameter("data_dir", keyword, annotation=DataDirOption, default=None),
                   inspect.Parameter("as_json", keyword, annotation=JsonOption, default=False)]
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    command.__name__ = row.cli.replace("-", "_")
    command.__doc__ = f"{row.summary}{' Destructive.' if row.destructive else ''}"
    return command


for _row in ACTIONS:
    site_app.command(_row.cli)(_control_command(_row))


@site_app.command("mark-host")
def mark_host(host: str, state: str, site: SiteOption, data_dir: DataDirOption = None,
              as_json: JsonOption = False) -> None:
    """Mark HOST healthy, degraded or offline; only healthy hosts take new jobs (its agent does this itself)."""
    _control(site, data_dir, "mark-host", as_json, host=host, state=state)


def worker(
    site: SiteOption,
    data_dir: DataDirOption = None,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = "cpu_queue,local_ai_queue,"
    "media_queue,external_ai_queue",
    name: Annotated[str | None, typer.Option(help="Worker name (default host-pid).")] = None,
    host: Annotated[str | None, typer.Option(help="Host id the worker reports (default: the machine's "
                                             "name); the ops agent sets its own.")] = None,
) -> None:
    """Run one worker process for the site's stages."""
    from site_scheduler.worker import run_worker

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown or not chosen:
        raise InputError(f"--queues: value {queues!r}: expected a comma-separated subset of {', '.join(QUEUES)}")
    endpoints = read_endpoints(site, data_dir or default_data_dir(site))
    run_worker(endpoints, chosen, name or f"{host or socket.gethostname()}-{os.getpid()}", host)


def submit(
    project: Annotated[Path, typer.Argument(help="The project file.")],
    site: SiteOption,
    data_dir: DataDirOption = None,
    out: Annotated[Path | None, typer.Option(help="Where to publish (default DATA_DIR/out/RUN).")] = None,
    profile: Annotated[str, typer.Option(help="Render profile.")] = "preview_local",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Submit PROJECT to the site; prints the run id (and with --wait, how it ended).

    With --wait on a terminal, stderr shows the stages done out of the run's total as they finish.
    """
    client = _client(site, data_dir)
    run_id = client.submit(project, out, profile)
    if not wait:
        _print({"run_id": run_id, "status": "queued"}, as_json, [run_id])
        return
    run = _wait(client, run_id) if sys.stderr.isatty() else client.wait(run_id)
    _print(run, as_json, [f"{run_id} {run['status']}" + (f": {run['detail']}" if run["detail"] else "")
                          + (f" {run['episode']}" if run["episode"] else "")])
    if run["status"] != "completed":
        raise RUN_ENDINGS.get(run["status"], RunFailed)(run_id, run["status"], run["detail"])


def _wait(client: Any, run_id: str) -> dict[str, Any]:
    """``client.wait(run_id)``, while a thread rewrites one stderr line with the stages done so far."""
    finished = threading.Event()

    def show() -> None:
        shown = ""
        while not finished.wait(PROGRESS_POLL_S):
            try:
                run = client.run(run_id)
            except Exception:  # the wait itself reports a site gone; the line just stops moving
                continue
            if run is None:
                continue
            done = sum(1 for stage in run["stages"] if stage["status"] == "done")
            line = f"{run_id}: {done}/{len(run['stages'])} stages done ({run['status']})"
            if line != shown:
                sys.stderr.write(f"\r\033[K{line}")
                sys.stderr.flush()
                shown = line
        if shown:
            sys.stderr.write("\n")

    progress = threading.Thread(target=show, name="progress", daemon=True)
    progress.start()
    try:
        return client.wait(run_id)
    finally:
        finished.set()
        progress.join()


@runs_app.command("list")
def runs_list(site: SiteOption, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every run on the site."""
    rows = _client(site, data_dir).runs()
    _print(rows, as_json, [f"{r['run_id']}  {r['status']:<10} {r['project_path']}" for r in rows])


@runs_app.command("show")
def runs_show(run: str, site: SiteOption, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """One run and its stages."""
    found = _client(site, data_dir).run(run)
    if found is None:
        raise InputError(f"run {run!r} does not exist on site {site}")
    lines = [f"{found['run_id']} {found['status']} {found['detail']}".rstrip(), f"episode: {found['episode'] or '-'}"]
    lines += [f"  {s['stage_id']:<32} {s['queue']:<15} {s['status']:<9} {s['worker'] or '-'}" for s in found["stages"]]
    _print(found, as_json, lines)
