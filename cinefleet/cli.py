"""The ``cinefleet`` command. Each component contributes its subcommands here.

Exit codes are part of the interface, the same for every command:

====  ==================  ====================================================================
code  meaning             raised as
====  ==================  ====================================================================
0     ok
1     failed              anything else: a failed run or stage, a broken audit chain, a command
                          the agent verified but could not carry out
2     invalid input       ``InputError``, ``AgentInputError``, a bad action or target, a bad
                          option (typer's usage errors); nothing was written or sent
3     gate blocked        ``GateBlocked`` (render), ``RunBlocked`` (submit --wait); no episode
4     refused by the      ``ControlRefused``: the control names something missing or in the
      site                wrong state; nothing changed
5     rejected by the     ``Rejected`` (a check of the signed command failed) or mTLS refused
      agent               the caller; nothing ran
6     run cancelled       ``RunCancelled`` (submit --wait)
7     unreachable         the site or the agent did not answer (``SiteUnreachable``,
                          ``SiteNotFound``, Redis or database connection errors, gRPC errors)
====  ==================  ====================================================================

The component commands raise their own errors and print nothing about them; :func:`exit_code`
is the one place that turns an error into its exit code (:data:`EXIT_CODES`), and the root
command group prints ``error: MESSAGE`` on stderr for it. An exception no row matches is a bug
and keeps its traceback.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import platformdirs
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cinefleet import logs
from pipeline.errors import PipelineError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_BLOCKED = 3
EXIT_REFUSED = 4
EXIT_REJECTED = 5
EXIT_CANCELLED = 6
EXIT_UNREACHABLE = 7

#: gRPC status codes (by name) that mean the agent refused the caller (mTLS identity) rather than was unreachable.
_REFUSED_BY_AGENT = ("PERMISSION_DENIED", "UNAUTHENTICATED")


def _grpc_exit(exc: BaseException) -> int:
    import grpc  # already loaded: ``exc`` is one of its errors

    code = exc.code() if isinstance(exc, grpc.Call) else None
    return EXIT_REJECTED if code is not None and code.name in _REFUSED_BY_AGENT else EXIT_UNREACHABLE


#: The one table from errors to exit codes, most specific first: the first row whose class matches
#: wins; a callable decides for classes whose instances differ (gRPC status codes). Classes are
#: named ``module:Class``, not imported: the table must not make every command pay for importing
#: gRPC, SQLAlchemy and the control plane, and an error's class is loaded whenever the error exists.
EXIT_CODES: tuple[tuple[str, int | Callable[[BaseException], int]], ...] = (
    ("pipeline.errors:InputError", EXIT_INPUT),
    ("ops_agent.errors:AgentInputError", EXIT_INPUT),
    ("protos.actions:ActionInputError", EXIT_INPUT),
    ("control_plane.errors:ControlInputError", EXIT_INPUT),
    ("control_plane.errors:NotFound", EXIT_INPUT),
    ("control_plane.errors:Conflict", EXIT_REFUSED),
    ("control_plane.errors:Unauthenticated", EXIT_REJECTED),
    ("control_plane.errors:Forbidden", EXIT_REJECTED),
    ("control_plane.audit:AuditBroken", EXIT_FAILED),
    ("pipeline.errors:GateBlocked", EXIT_BLOCKED),
    ("site_scheduler.errors:RunBlocked", EXIT_BLOCKED),
    ("site_scheduler.errors:ControlRefused", EXIT_REFUSED),
    ("ops_agent.errors:Rejected", EXIT_REJECTED),
    ("site_scheduler.errors:RunCancelled", EXIT_CANCELLED),
    ("site_scheduler.errors:SiteUnreachable", EXIT_UNREACHABLE),
    ("control_plane.errors:Unreachable", EXIT_UNREACHABLE),
    ("site_scheduler.errors:SiteNotFound", EXIT_UNREACHABLE),
    ("redis.exceptions:ConnectionError", EXIT_UNREACHABLE),
    ("redis.exceptions:TimeoutError", EXIT_UNREACHABLE),
    ("sqlalchemy.exc:OperationalError", EXIT_UNREACHABLE),
    ("grpc:RpcError", _grpc_exit),
    ("pipeline.errors:PipelineError", EXIT_FAILED),
    ("site_scheduler.errors:SiteError", EXIT_FAILED),
    ("ops_agent.errors:AgentError", EXIT_FAILED),
    ("control_plane.errors:ControlError", EXIT_FAILED),
)


def _loaded_class(name: str) -> type | None:
    """The class ``module:Class`` if its module is already imported, else None: then no instance of it exists."""
    module, _, attribute = name.partition(":")
    found = getattr(sys.modules.get(module), attribute, None)
    return found if isinstance(found, type) else None


def exit_code(exc: BaseException) -> int | None:
    """The exit code for ``exc`` from :data:`EXIT_CODES`; None for an error no row knows (a bug)."""
    for name, code in EXIT_CODES:
        kind = _loaded_class(name)
        if kind is not None and isinstance(exc, kind):
            return code(exc) if callable(code) else code
    return None


def error_message(exc: BaseException) -> str:
    """What the operator reads: the error's own sentence (a gRPC error's status and details)."""
    rpc_error, call, sql_error = map(_loaded_class, ("grpc:RpcError", "grpc:Call", "sqlalchemy.exc:SQLAlchemyError"))
    if rpc_error and call and isinstance(exc, rpc_error) and isinstance(exc, call):
        return f"agent: {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return str(exc).splitlines()[0] if sql_error and isinstance(exc, sql_error) else str(exc)


#: The commands the components contribute, by name: ``(module, attribute)``, a Typer app or a command
#: function. Each module is imported only when its command runs or a help page lists it, so that
#: ``cinefleet worker`` or ``cinefleet submit`` does not pay for importing the control plane and the
#: agent (a second of CPU per process, and a site's tests start dozens of them).
COMPONENT_COMMANDS: dict[str, tuple[str, str]] = {}


class _MappedGroup(TyperGroup):
    """The root group: imports a component's command when it is asked for, runs the command, and turns what
    it raises into ``error: ...`` and its exit code."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.imported: set[str] = set()

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMPONENT_COMMANDS and cmd_name not in self.imported:
            self.commands[cmd_name] = _import_command(cmd_name)
            self.imported.add(cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors click privately)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # typer's own exits and usage errors
            raise
        except Exception as exc:
            code = exit_code(exc)
            if code is None:
                raise
            typer.echo(f"error: {error_message(exc)}", err=True)
            raise typer.Exit(code) from None


def _import_command(name: str) -> Any:
    """The click command (or group) of the component command ``name``, built as ``add_typer``/``command`` would."""
    module, attribute = COMPONENT_COMMANDS[name]
    found = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer()
    if isinstance(found, typer.Typer):
        holder.add_typer(found, name=name)
    else:
        holder.command(name)(found)
    return typer.main.get_group(holder).commands[name]


def _component_group(name: str, module: str, attribute: str) -> None:
    """Add the component's Typer app ``module.attribute`` as the group ``name``; it is imported when needed."""
    COMPONENT_COMMANDS[name] = (module, attribute)
    app.add_typer(typer.Typer(), name=name)  # holds the group's place (help lists groups in this order)


def _component_command(name: str, module: str, attribute: str) -> None:
    """Add the component's command function ``module.attribute`` as ``name``; it is imported when needed."""
    COMPONENT_COMMANDS[name] = (module, attribute)
    app.command(name)(_not_imported)  # holds the command's place; never runs (see _MappedGroup.get_command)


def _not_imported() -> None:
    raise AssertionError("a component command ran before it was imported")


app = typer.Typer(help="Render preview episodes and run the cinefleet fleet.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=_MappedGroup)
schemas_app = typer.Typer(help="JSON Schemas of every document.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures and ratios.", no_args_is_help=True)
store_app = typer.Typer(help="The content-addressed artifact store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
app.add_typer(schemas_app, name="schemas")
_component_group("site", "site_scheduler.cli", "site_app")
_component_group("runs", "site_scheduler.cli", "runs_app")
_component_command("worker", "site_scheduler.cli", "worker")
_component_command("submit", "site_scheduler.cli", "submit")
_component_group("agent", "ops_agent.cli", "agent_app")
_component_group("keys", "ops_agent.cli", "keys_app")
audit_app = typer.Typer(help="Hash-chained audit logs: an agent's file, or the centre's database.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
_component_group("control", "control_plane.cli", "control_app")
_component_group("alerts", "control_plane.alerts.cli", "alerts_app")
_component_group("fleet", "control_plane.fleet_cli", "fleet_app")
_component_group("pki", "ops_agent.cli", "pki_app")
_component_command("ops", "ops_agent.cli", "ops")
app.add_typer(bench_app, name="bench")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path | None, typer.Argument(help="An agent's audit log (JSON lines).")] = None,
    db: Annotated[str | None, typer.Option("--db", help="The centre's fleet database (SQLAlchemy URL).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="With --db: the signer's public key file; checkpoints "
                                                            "must be signed by it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Verify an agent's audit FILE, or the centre's chain with --db; exit 1 naming the first bad entry."""
    if (file is None) == (db is None):
        raise _fail(EXIT_INPUT, "audit verify: expected either FILE (an agent's log) or --db URL (the centre's)")
    if key is not None and db is None:
        raise _fail(EXIT_INPUT, "--key: checks the centre's checkpoints; expected it with --db")
    if db is not None:
        from control_plane.people_cli import audit_verify as control_audit_verify

        control_audit_verify(db, key, as_json)
    else:
        from ops_agent.cli import verify as agent_audit_verify

        assert file is not None
        agent_audit_verify(file, as_json)


def default_store() -> Path:
    return Path(platformdirs.user_data_dir("cinefleet")) / "store"


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def render(
    project: Annotated[Path, typer.Argument(help="The project file (JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Folder that receives the published outputs.")],
    store: Annotated[Path | None, typer.Option(help="Artifact store; defaults to a per-user data folder.")] = None,
    profile: Annotated[str, typer.Option(help="Render profile.")] = "preview_local",
    workers: Annotated[int, typer.Option(help="Parallel ffmpeg jobs.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Render PROJECT into DIR: the artifacts, episode.mp4, captions.srt and run_summary.json.

    SIGINT, SIGTERM or SIGHUP stop it cleanly: its ffmpeg and espeak-ng processes are killed, its
    scratch folders removed, nothing is published, and it exits 128 + the signal's number.
    """
    from pipeline.progress import Lines
    from pipeline.render import Interrupted, RenderRequest, stop_on_signals
    from pipeline.render import render as run_render

    request = RenderRequest(project=project, out=out, store=store or default_store(), profile=profile,
                            workers=workers)
    try:
        with stop_on_signals():
            result = run_render(request, Lines())
    except Interrupted as stopped:
        raise _fail(128 + stopped.signum, f"{stopped}: its encoders were stopped and its scratch removed; "
                    "nothing was published") from None
    if result.blocked is not None:
        raise result.blocked
    summary = result.summary
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    typer.echo(
        f"rendered {out / 'episode.mp4'}: {result.output.duration_s:.2f} s, {result.output.frames} frames, "  # type: ignore[union-attr]
        f"{summary.shots_rendered} shots rendered, {summary.shots_reused} reused, "
        f"{summary.total_seconds:.1f} s wall, voice: {summary.voice_mode}"
    )


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="An artifact or project file.")],
    kind: Annotated[str | None, typer.Option(help="Document kind when the file name does not tell it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Validate FILE against its schema; the kind comes from the file name (Script.json) or --kind."""
    import json

    from pipeline.documents import load_any

    document = load_any(file, kind)
    if as_json:
        typer.echo(json.dumps({"file": str(file), "valid": True, "kind": type(document).__name__,
                               "schema_version": document.schema_version}))
        return
    typer.echo(f"{file}: valid {type(document).__name__} {document.schema_version}")


@schemas_app.command("export")
def schemas_export(folder: Annotated[Path, typer.Argument()] = Path("schemas")) -> None:
    """Write schemas/<Name>.schema.json for every document."""
    from pipeline.schema_export import export

    for path in export(folder):
        typer.echo(str(path))


@schemas_app.command("check")
def schemas_check(folder: Annotated[Path, typer.Argument()] = Path("schemas")) -> None:
    """Fail when the committed schemas differ from the models."""
    from pipeline.schema_export import stale

    problems = stale(folder)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise PipelineError("schemas are stale; run `cinefleet schemas export`")
    typer.echo(f"{folder}: current")


@store_app.command("verify")
def store_verify(
    store: Annotated[Path | None, typer.Argument(help="Store folder; defaults to the per-user one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Hash every blob in STORE; quarantine the damaged ones (exit 1 when any was found)."""
    import json

    from pipeline.store import ArtifactStore

    root = store or default_store()
    if not root.is_dir():
        raise _fail(EXIT_INPUT, f"store: value {str(root)!r}: expected an existing store folder")
    report = ArtifactStore(root).check()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        for damaged in report.damaged:
            typer.echo(f"damaged: {damaged}", err=True)
        typer.echo(f"{root}: {report.blobs} blobs whole ({report.bytes} bytes), {len(report.damaged)} damaged")
    if report.damaged:
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("render")
def bench_render(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: a temporary one).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel ffmpeg jobs.")] = 2,
    shots: Annotated[int, typer.Option(help="Shots in the reference episode (even number).")] = 40,
) -> None:
    """Cold and warm render of a 40-shot, ~10-minute reference episode, against an encode floor."""
    _bench_module("render").run_benchmark(workdir=workdir, workers=workers, shots=shots)


@bench_app.command("site")
def bench_site(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: a temporary one).")] = None,
    stages: Annotated[int, typer.Option(help="No-op stages for the dispatch figure.")] = 1000,
    shots: Annotated[int, typer.Option(help="Shots in the reference episode (even number).")] = 40,
    parts: Annotated[str, typer.Option(help="Comma-separated parts to run: dispatch, episode, drain, cancel.")] =
    "dispatch,episode,drain,cancel",
) -> None:
    """Site overhead: no-op dispatch vs plain dramatiq, the episode vs render, drain and cancel latency."""
    module = _bench_module("site")
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    if not chosen or set(chosen) - set(module.PARTS):
        raise _fail(EXIT_INPUT, f"--parts: value {parts!r}: expected a comma-separated subset of "
                                f"{', '.join(module.PARTS)}")
    module.run_benchmark(workdir=workdir, stages=stages, shots=shots, parts=chosen)


@bench_app.command("agent")
def bench_agent(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: a temporary one).")] = None,
    commands: Annotated[int, typer.Option(help="Signed round trips (pause/resume a queue, alternately).")] = 2000,
    idle: Annotated[float, typer.Option(help="Seconds the idle agent's CPU is measured over.")] = 20.0,
) -> None:
    """Signed command round trip through an agent (p50, p99), verifications/s, the idle agent's CPU."""
    if commands < 2 or idle <= 0:
        raise _fail(EXIT_INPUT, f"--commands {commands}, --idle {idle}: expected at least 2 commands and a "
                                "positive number of seconds")
    _bench_module("agent").run_benchmark(workdir=workdir, commands=commands, idle_s=idle)


@bench_app.command("control")
def bench_control(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: a temporary one).")] = None,
    hosts: Annotated[int, typer.Option(help="Simulated hosts, one report per 5 s each.")] = 10_000,
    seconds: Annotated[float, typer.Option(help="Seconds each steady load is held.")] = 20.0,
    rate: Annotated[int, typer.Option(help="Outbox events per second of each of the 4 sites.")] = 500,
    backlog: Annotated[int, typer.Option(help="Events of the backlog caught up.")] = 100_000,
    commands: Annotated[int, typer.Option(help="Commands timed through the centre, and as many to the agent.")] = 100,
    runs: Annotated[int, typer.Option(help="Runs in the fleet database for the runs list.")] = 100_000,
    parts: Annotated[str, typer.Option(help="Comma-separated parts to run: ingest, replication, command, runs.")] =
    "ingest,replication,command,runs",
) -> None:
    """The centre: telemetry ingest, host offline time, replication lag and catch-up, commands, the runs list."""
    module = _bench_module("control")
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    if not chosen or set(chosen) - set(module.PARTS):
        raise _fail(EXIT_INPUT, f"--parts: value {parts!r}: expected a comma-separated subset of "
                                f"{', '.join(module.PARTS)}")
    if hosts < 2 or seconds <= 0 or rate < 1 or backlog < 1 or commands < 1 or runs < 1:
        raise _fail(EXIT_INPUT, f"--hosts {hosts}, --seconds {seconds}, --rate {rate}, --backlog {backlog}, "
                                f"--commands {commands}, --runs {runs}: expected at least 2 hosts and positive numbers")
    module.run_benchmark(workdir=workdir, hosts=hosts, seconds=seconds, rate=rate, backlog=backlog, commands=commands,
                         runs=runs, parts=chosen)


@bench_app.command("dashboard")
def bench_dashboard(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: a temporary one).")] = None,
    runs: Annotated[int, typer.Option(help="Runs in the fleet database (six stages each).")] = 100_000,
    hosts: Annotated[int, typer.Option(help="Hosts in the fleet database (two workers, an hour of samples each).")]
    = 1_000,
    requests: Annotated[int, typer.Option(help="Timed requests per page (after one untimed).")] = 50,
) -> None:
    """Every dashboard page's p50/p95 with a big fleet in the database, beside a static file and the JSON API."""
    if runs < 10 or hosts < 1 or requests < 1:
        raise _fail(EXIT_INPUT, f"--runs {runs}, --hosts {hosts}, --requests {requests}: expected at least 10 runs, "
                                "1 host and 1 request")
    _bench_module("dashboard").run_benchmark(workdir=workdir, runs=runs, hosts=hosts, requests=requests)


@bench_app.command("alerts")
def bench_alerts(
    workdir: Annotated[Path | None, typer.Option(help="Scratch folder (default: a temporary one).")] = None,
    messages: Annotated[int, typer.Option(help="Messages timed one at a time through delivery, and as many raw.")] =
    200,
    naive: Annotated[int, typer.Option(help="Messages sent through one plain apprise object (its 5.5 s gap); "
                                            "0 skips it.")] = 3,
    events: Annotated[int, typer.Option(help="Distinct critical alerts timed from event to receiver.")] = 100,
    tick: Annotated[float, typer.Option(help="Seconds between two ticks of the emitter (event part).")] = 0.5,
    duplicates: Annotated[int, typer.Option(help="Duplicate events of one alert, streamed (dedup part).")] = 10_000,
    ticked: Annotated[int, typer.Option(help="Duplicate events each ticked on its own first (dedup part).")] =
    1_000,
    parts: Annotated[str, typer.Option(help="Comma-separated parts to run: delivery, burst, event, dedup.")] =
    "delivery,burst,event,dedup",
) -> None:
    """Alerts: event to receiver p50/p99, 10,000 duplicates to one notification, a burst of 20 to one URL."""
    module = _bench_module("alerts")
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    if not chosen or set(chosen) - set(module.PARTS):
        raise _fail(EXIT_INPUT, f"--parts: value {parts!r}: expected a comma-separated subset of "
                                f"{', '.join(module.PARTS)}")
    if messages < 1 or naive < 0 or events < 1 or tick <= 0 or duplicates < 1 or ticked < 0:
        raise _fail(EXIT_INPUT, f"--messages {messages}, --naive {naive}, --events {events}, --tick {tick}, "
                                f"--duplicates {duplicates}, --ticked {ticked}: expected positive numbers (--naive "
                                "and --ticked may be 0)")
    module.run_benchmark(workdir=workdir, messages=messages, naive=naive, events=events, tick=tick,
                         duplicates=duplicates, ticked=ticked, parts=chosen)


def _bench_module(name: str) -> ModuleType:
    """A benchmark (``cinefleet.bench.NAME``), imported only when it runs: they pull in every component."""
    return importlib.import_module(f"cinefleet.bench.{name}")


def main() -> None:
    logs.configure()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # Every object is garbage by now: frozen, the interpreter's final collections skip the hundreds of
        # thousands of them a site process imported (half a second of CPU at each exit, every command and worker).
        gc.freeze()
