"""The site's commands: ``cinefleet site ...``, ``cinefleet worker``, ``cinefleet submit``, ``cinefleet runs``.

Every command finds its site through ``--site ID [--data-dir DIR]`` (the ``site.json`` that
``site serve`` writes). ``--json`` prints what a program can read.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.errors import InputError
from site_scheduler.config import default_data_dir, read_endpoints
from site_scheduler.errors import ControlRefused, SiteError

EXIT_FAILED, EXIT_INPUT, EXIT_REFUSED = 1, 2, 4

site_app = typer.Typer(help="Run and operate a site.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs on a site and their stages.", no_args_is_help=True)

SiteOption = Annotated[str, typer.Option("--site", help="Site id.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Site data folder (default per user).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _client(site: str, data_dir: Path | None) -> Any:
    from site_scheduler.client import SiteClient

    try:
        return SiteClient(read_endpoints(site, data_dir or default_data_dir(site)))
    except SiteError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None


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
                                                 "127.0.0.1:PORT (0 picks a free port; site.json says which).")] = None,
) -> None:
    """Start the site's scheduler (and its Redis, unless --redis-url is given)."""
    from site_scheduler.service import serve as run

    try:
        run(site, data_dir or default_data_dir(site), redis_url, db_url, api_port=api_port)
    except SiteError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None


@site_app.command("outbox")
def outbox_command(site: SiteOption, data_dir: DataDirOption = None,
                   since: Annotated[int, typer.Option(help="Print events after this sequence number.")] = 0) -> None:
    """Print the outbox as JSON lines, in sequence order."""
    client = _client(site, data_dir)
    for event in client.outbox(since):
        typer.echo(json.dumps(event, sort_keys=True, default=str))


@site_app.command("workers")
def workers(site: SiteOption, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Workers with their status and current job."""
    rows = _client(site, data_dir).workers()
    _print(rows, as_json, [f"{w['name']:<20} {w['status']:<9} {w['host']}:{w['pid']:<8} "
                           f"{w['current_job'] or '-'}" for w in rows])


@site_app.command("queues")
def queues(site: SiteOption, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Per queue: paused, waiting, depth, in flight, delayed, dead, throughput, drain estimate."""
    rows = _client(site, data_dir).queues()
    _print(rows, as_json, [f"{q['queue']:<18} {'paused' if q['paused'] else 'running':<8} waiting {q['waiting']:<4} "
                           f"depth {q['depth']:<4} in flight {q['in_flight']:<3} delayed {q['delayed']:<3} "
                           f"dead {q['dead']:<3} {q['throughput_per_hour']} jobs/h, drains in "
                           f"{'unknown' if q['drain_eta_s'] is None else str(q['drain_eta_s']) + ' s'}"
                           for q in rows])


def _control(site: str, data_dir: Path | None, action: str, **args: Any) -> None:
    client = _client(site, data_dir)
    try:
        typer.echo(client.control(action, **args))
    except ControlRefused as exc:
        raise _fail(EXIT_REFUSED, f"refused: {exc}") from None
    except SiteError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None


DeadlineOption = Annotated[float | None, typer.Option(
    help="Seconds in-flight jobs may still run; then they are requeued on another worker.")]


@site_app.command("drain-worker")
def drain_worker(name: str, site: SiteOption, data_dir: DataDirOption = None,
                 deadline: DeadlineOption = None) -> None:
    """Stop NAME taking new jobs; its job in flight finishes (or is requeued after the deadline, default 1 h)."""
    _control(site, data_dir, "drain-worker", worker=name, **({} if deadline is None else {"deadline": deadline}))


@site_app.command("undrain-worker")
def undrain_worker(name: str, site: SiteOption, data_dir: DataDirOption = None) -> None:
    """Let a drained worker take jobs again."""
    _control(site, data_dir, "undrain-worker", worker=name)


@site_app.command("restart-worker")
def restart_worker(name: str, site: SiteOption, data_dir: DataDirOption = None,
                   deadline: DeadlineOption = None) -> None:
    """Drain NAME (deadline default 30 s), then replace its process with a fresh one; nothing is lost."""
    _control(site, data_dir, "restart-worker", worker=name, **({} if deadline is None else {"deadline": deadline}))


@site_app.command("pause-queue")
def pause_queue(queue: str, site: SiteOption, data_dir: DataDirOption = None) -> None:
    """Stop every new job of QUEUE at the site; running ones finish."""
    _control(site, data_dir, "pause-queue", queue=queue)


@site_app.command("resume-queue")
def resume_queue(queue: str, site: SiteOption, data_dir: DataDirOption = None) -> None:
    """Resume a paused queue."""
    _control(site, data_dir, "resume-queue", queue=queue)


@site_app.command("cancel-run")
def cancel_run(run: str, site: SiteOption, data_dir: DataDirOption = None) -> None:
    """Cancel RUN: queued stages are skipped, running subprocesses killed, nothing published."""
    _control(site, data_dir, "cancel-run", run=run)


@site_app.command("retry-stage")
def retry_stage(run: str, stage: str, site: SiteOption, data_dir: DataDirOption = None) -> None:
    """Re-enqueue a failed STAGE of RUN, keeping its identity."""
    _control(site, data_dir, "retry-stage", run=run, stage=stage)


@site_app.command("mark-host")
def mark_host(host: str, state: str, site: SiteOption, data_dir: DataDirOption = None) -> None:
    """Mark HOST healthy, degraded or offline; only healthy hosts take new jobs."""
    _control(site, data_dir, "mark-host", host=host, state=state)


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
    from site_scheduler.keys import QUEUES
    from site_scheduler.worker import run_worker

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown or not chosen:
        raise _fail(EXIT_INPUT, f"--queues: value {queues!r}: expected a comma-separated subset of {', '.join(QUEUES)}")
    try:
        endpoints = read_endpoints(site, data_dir or default_data_dir(site))
    except SiteError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None
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
    """Submit PROJECT to the site; prints the run id (and with --wait, how it ended)."""
    client = _client(site, data_dir)
    try:
        run_id = client.submit(project, out, profile)
    except InputError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    if not wait:
        _print({"run_id": run_id, "status": "queued"}, as_json, [run_id])
        return
    run = client.wait(run_id)
    _print(run, as_json, [f"{run_id} {run['status']}" + (f": {run['detail']}" if run["detail"] else "")
                          + (f" {run['episode']}" if run["episode"] else "")])
    if run["status"] != "completed":
        raise typer.Exit({"failed": 1, "blocked": 3, "cancelled": 5}.get(run["status"], 1))


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
        raise _fail(EXIT_INPUT, f"run {run!r} does not exist on site {site}")
    lines = [f"{found['run_id']} {found['status']} {found['detail']}".rstrip(), f"episode: {found['episode'] or '-'}"]
    lines += [f"  {s['stage_id']:<32} {s['queue']:<15} {s['status']:<9} {s['worker'] or '-'}" for s in found["stages"]]
    _print(found, as_json, lines)
