"""The ``cinefleet`` command. Each component contributes its subcommands here.

Exit codes are part of the interface: 0 success, 2 invalid input (nothing written), 3 a gate
blocked publishing (no episode written), 1 any other failure.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import platformdirs
import typer

from cinefleet import logs
from ops_agent.cli import agent_app, audit_app, keys_app, ops, pki_app
from pipeline.errors import InputError, PipelineError
from site_scheduler.cli import runs_app, site_app
from site_scheduler.cli import submit as site_submit
from site_scheduler.cli import worker as site_worker

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_BLOCKED = 3

app = typer.Typer(help="Render preview episodes and run the cinefleet fleet.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
schemas_app = typer.Typer(help="JSON Schemas of every document.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures and ratios.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
app.add_typer(site_app, name="site")
app.add_typer(runs_app, name="runs")
app.command("worker")(site_worker)
app.command("submit")(site_submit)
app.add_typer(agent_app, name="agent")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(pki_app, name="pki")
app.command("ops")(ops)
app.add_typer(bench_app, name="bench")


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
) -> None:
    """Render PROJECT into DIR: the artifacts, episode.mp4, captions.srt and run_summary.json."""
    from pipeline.progress import Lines
    from pipeline.render import RenderRequest
    from pipeline.render import render as run_render

    request = RenderRequest(project=project, out=out, store=store or default_store(), profile=profile,
                            workers=workers)
    try:
        result = run_render(request, Lines())
    except InputError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    except PipelineError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None
    if result.blocked is not None:
        raise _fail(EXIT_BLOCKED, str(result.blocked))
    summary = result.summary
    typer.echo(
        f"rendered {out / 'episode.mp4'}: {result.output.duration_s:.2f} s, {result.output.frames} frames, "  # type: ignore[union-attr]
        f"{summary.shots_rendered} shots rendered, {summary.shots_reused} reused, "
        f"{summary.total_seconds:.1f} s wall, voice: {summary.voice_mode}"
    )


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="An artifact or project file.")],
    kind: Annotated[str | None, typer.Option(help="Document kind when the file name does not tell it.")] = None,
) -> None:
    """Validate FILE against its schema; the kind comes from the file name (Script.json) or --kind."""
    from pipeline.documents import load_any

    try:
        document = load_any(file, kind)
    except InputError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
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
        raise _fail(EXIT_FAILED, "schemas are stale; run `cinefleet schemas export`")
    typer.echo(f"{folder}: current")


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


def _bench_module(name: str) -> ModuleType:
    """A benchmark (``cinefleet.bench.NAME``), imported only when it runs: they pull in every component."""
    return importlib.import_module(f"cinefleet.bench.{name}")


def main() -> None:
    logs.configure()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
