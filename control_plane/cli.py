"""The centre's commands: ``cinefleet control serve``, ``control site add``, ``control status``; the people
commands (``control user|token|signer``) come from :mod:`control_plane.people_cli`.

Commands raise the centre's errors and print nothing about them; ``cinefleet`` turns each into
its message and exit code in one place (``cinefleet.cli.EXIT_CODES``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from control_plane.people_cli import signer, token_app, user_app

control_app = typer.Typer(help="The central control plane: ingest of every site and host, people, tokens and the "
                               "command signer.", no_args_is_help=True)
site_app = typer.Typer(help="Sites allowed to push to the centre.", no_args_is_help=True)
control_app.add_typer(site_app, name="site")
control_app.add_typer(user_app, name="user")
control_app.add_typer(token_app, name="token")
control_app.command("signer")(signer)

DataDirOption = Annotated[Path, typer.Option("--data-dir", help="The centre's data folder (fleet.db, control.json).")]
DbUrlOption = Annotated[str | None, typer.Option("--db-url", help="SQLAlchemy URL of the fleet database "
                                                                  "(default: SQLite DATA_DIR/fleet.db).")]


@control_app.command("serve")
def serve(
    data_dir: DataDirOption,
    db_url: DbUrlOption = None,
    grpc_listen: Annotated[str, typer.Option("--grpc", help="HOST:PORT for ingest (loopback; port 0 picks one, "
                                                            "written to DATA_DIR/control.json).")] = "127.0.0.1:50161",
    http_listen: Annotated[str, typer.Option("--http", help="HOST:PORT for the API (loopback; port 0 picks one, "
                                                            "written to DATA_DIR/control.json).")] = "127.0.0.1:50180",
    interval: Annotated[float, typer.Option(help="Seconds between an agent's reports unless it says; a host "
                                                 "silent for 3 of them is offline.")] = 5.0,
    site_timeout: Annotated[float, typer.Option(help="Seconds without a push or a host report before a site is "
                                                     "disconnected.")] = 15.0,
    signer_socket: Annotated[Path | None, typer.Option("--signer-socket", help="The signer's Unix socket (default "
                                                                               "DATA_DIR/signer.sock).")] = None,
    approval: Annotated[list[str] | None, typer.Option("--approval", help="An action that needs a second person's "
                                                                          "approval; repeatable (give the signer "
                                                                          "the same).")] = None,
    tls_dir: Annotated[Path | None, typer.Option("--tls-dir", help="A `cinefleet pki init` folder: commands go to "
                                                                   "the agents over mTLS.")] = None,
) -> None:
    """Serve ingest (gRPC) and the API (HTTP) until SIGTERM; commands are signed by `control signer`."""
    from control_plane.server import ControlConfig
    from control_plane.server import serve as run

    run(ControlConfig(data_dir=data_dir.resolve(), db_url=db_url, grpc_listen=grpc_listen, interval_s=interval,
                      http_listen=http_listen, site_timeout_s=site_timeout, signer_socket=signer_socket,
                      approvals=tuple(approval or ()), agent_tls_dir=tls_dir))


@site_app.command("add")
def site_add(
    site: Annotated[str, typer.Argument(help="The site id.")],
    data_dir: DataDirOption,
    db_url: DbUrlOption = None,
    token_file: Annotated[Path | None, typer.Option(help="Also write the token to this file (mode 0600), for "
                                                         "`site serve --control-token-file`.")] = None,
) -> None:
    """Let SITE push: print a new token for it (shown once; a previous token stops working)."""
    from control_plane.server import ControlConfig, open_fleet
    from control_plane.sites import add_site

    engine = open_fleet(ControlConfig(data_dir=data_dir.resolve(), db_url=db_url))
    try:
        token, replaced = add_site(engine, site)
    finally:
        engine.dispose()
    if token_file is not None:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    typer.echo(token)
    if replaced:
        typer.echo(f"site {site}: the previous token no longer works", err=True)


@control_app.command("status")
def status(
    data_dir: DataDirOption,
    db_url: DbUrlOption = None,
    interval: Annotated[float, typer.Option(help="The agents' report interval the centre assumes.")] = 5.0,
    site_timeout: Annotated[float, typer.Option(help="Seconds without a push or a host report before a site is "
                                                     "disconnected.")] = 15.0,
    as_json: Annotated[bool, typer.Option("--json", help="Sites and hosts as one JSON object.")] = False,
) -> None:
    """Sites (connection, cursor, lag) and hosts (state, reasons) as the centre sees them now."""
    from sqlalchemy.orm import Session

    from control_plane.fleet import Fleet, Liveness
    from control_plane.server import ControlConfig, open_fleet

    engine = open_fleet(ControlConfig(data_dir=data_dir.resolve(), db_url=db_url))
    try:
        with Session(engine) as session:
            fleet = Fleet(session, Liveness(interval, site_timeout))
            sites, hosts = fleet.sites(), fleet.hosts()
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"sites": [s.model_dump() for s in sites], "hosts": [h.model_dump() for h in hosts]},
                              indent=2, sort_keys=True))
        return
    for s in sites:
        lag = "-" if s.lag_s is None else f"{s.lag_s:.2f} s"
        typer.echo(f"site {s.site_id:<16} {s.connection:<12} cursor {s.cursor} of {s.site_head}, lag {lag}, "
                   f"{s.events_per_s:.1f} events/s{f' ({s.reason})' if s.reason else ''}")
    for h in hosts:
        typer.echo(f"host {h.site_id}/{h.host:<16} {h.state:<12} {'; '.join(h.reasons)}")
