"""``cinefleet alerts serve|status|list|ack|silence|unsilence|silences|test``.

They act on the fleet database directly (``--control-dir DIR`` for the centre's SQLite file, or
``--db-url``), as an operator on the centre's machine does; acks, silences and their removal are
audit rows with the actor ``--by`` names. Errors are raised, never printed here: ``cinefleet``
maps each to its message and exit code.
"""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from control_plane.alerts import actions, lease
from control_plane.alerts.config import load, seconds
from control_plane.alerts.serve import Where
from control_plane.alerts.silences import parse_matchers
from control_plane.errors import ControlError, ControlInputError

alerts_app = typer.Typer(help="Alerts that reach a phone: the emitter, and listing, acking and silencing alerts.",
                         no_args_is_help=True)

ControlDirOption = Annotated[Path | None, typer.Option("--control-dir", help="The centre's data folder "
                                                                            "(fleet.db, alert-ack.key).")]
DbUrlOption = Annotated[str | None, typer.Option("--db-url", help="The fleet database (SQLAlchemy URL) instead "
                                                                  "of CONTROL_DIR's SQLite file.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="The alert configuration (YAML); embedded "
                                                                    "defaults without it.")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who does it (recorded in the audit); default: the "
                                                           "login name.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _by(by: str | None) -> str:
    name = by or getpass.getuser()
    if not name or len(name) > 64:
        raise ControlInputError(f"--by: value {name!r}: expected a name of 1 to 64 characters")
    return name


@alerts_app.command("serve")
def serve_command(control_dir: ControlDirOption = None, db_url: DbUrlOption = None,
                  config: ConfigOption = None) -> None:
    """Run the emitter: read the fleet database every tick, raise, send, escalate and resolve alerts."""
    from control_plane.alerts.serve import serve

    settings = load(config)  # validated before anything else happens
    serve(Where(control_dir, db_url), settings)


@alerts_app.command("list")
def list_command(control_dir: ControlDirOption = None, db_url: DbUrlOption = None,
                 status: Annotated[list[str] | None, typer.Option("--status", help="Repeatable.")] = None,
                 limit: int = 100, as_json: JsonOption = False) -> None:
    """Alerts, newest first."""
    engine = Where(control_dir, db_url).engine()
    try:
        with Session(engine) as session:
            rows = actions.list_alerts(session, status=status or (), limit=limit)
            emitters = lease.emitters(session, time.time())
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for line in _emitter_lines(emitters):
        typer.echo(f"# {line}")
    for r in rows:
        extra = f" acked by {r['acked_by']}" if r["acked_by"] else f" ({r['muted']})" if r["muted"] else ""
        typer.echo(f"{r['id']:>6} {r['status']:<9} {r['severity']:<8} {r['alert_type']:<20} x{r['count']:<5} "
                   f"{r['summary'][:90]}{extra}")


def _emitter_lines(emitters: list[dict[str, object]]) -> list[str]:
    """One line per emitter, so that an operator sees which ``alerts serve`` sends and which stand by."""
    if not any(e["role"] == "active" for e in emitters):
        return ["emitter: none holds the lease (no alerts serve running on this database?)"] + [
            f"emitter {e['role']}: {e['host']} pid {e['pid']}" for e in emitters]
    return [f"emitter {e['role']}: {e['host']} pid {e['pid']}" + (
        " (sending)" if e["role"] == "active" else " (sends nothing until the active one's lease lapses)")
        for e in emitters]


@alerts_app.command("status")
def status_command(control_dir: ControlDirOption = None, db_url: DbUrlOption = None,
                   as_json: JsonOption = False) -> None:
    """The emitters on this database: the one holding the lease (sending) and the standbys."""
    engine = Where(control_dir, db_url).engine()
    try:
        with Session(engine) as session:
            emitters = lease.emitters(session, time.time())
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(emitters, indent=2, sort_keys=True))
        return
    for line in _emitter_lines(emitters):
        typer.echo(line)


@alerts_app.command("ack")
def ack_command(alert_id: Annotated[int, typer.Argument(help="The alert's id.")],
                control_dir: ControlDirOption = None, db_url: DbUrlOption = None, by: ByOption = None) -> None:
    """Ack an alert: nothing more is sent for it until it resolves."""
    engine = Where(control_dir, db_url).engine()
    try:
        row = actions.ack(engine, alert_id, _by(by), via="cli")
    finally:
        engine.dispose()
    typer.echo(f"alert {alert_id} acked by {row['acked_by']}")


@alerts_app.command("silence")
def silence_command(
    match: Annotated[list[str], typer.Option("--match", help="FIELD=VALUE (type, severity, site, tenant, host, run, "
                                                             "stage, id); repeatable, all must match.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")],
    duration: Annotated[str, typer.Option("--for", help="How long: seconds, or 30m, 2h, 1d.")] = "1h",
    control_dir: ControlDirOption = None, db_url: DbUrlOption = None, by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Silence the alerts matching every --match for a while; prints the silence's id."""
    try:
        length = float(seconds(duration))
    except (ValueError, TypeError):
        raise ControlInputError(f"--for: value {duration!r}: expected seconds or 30m, 2h, 1d") from None
    parse_matchers(match)  # bad input is refused before the database is opened
    engine = Where(control_dir, db_url).engine()
    try:
        row = actions.silence(engine, match, actor=_by(by), reason=reason, duration_s=length)
    finally:
        engine.dispose()
    typer.echo(json.dumps(row, sort_keys=True) if as_json else str(row["id"]))


@alerts_app.command("unsilence")
def unsilence_command(silence_id: Annotated[int, typer.Argument(help="The silence's id.")],
                      control_dir: ControlDirOption = None, db_url: DbUrlOption = None, by: ByOption = None) -> None:
    """Lift a silence now."""
    engine = Where(control_dir, db_url).engine()
    try:
        actions.unsilence(engine, silence_id, actor=_by(by))
    finally:
        engine.dispose()
    typer.echo(f"silence {silence_id} removed")


@alerts_app.command("silences")
def silences_command(control_dir: ControlDirOption = None, db_url: DbUrlOption = None,
                     every: Annotated[bool, typer.Option("--all", help="Also ended and removed ones.")] = False,
                     ) -> None:
    """Silences in force (or every one), newest first, as JSON."""
    engine = Where(control_dir, db_url).engine()
    try:
        with Session(engine) as session:
            rows = actions.list_silences(session, active_at=None if every else time.time())
    finally:
        engine.dispose()
    typer.echo(json.dumps(rows, indent=2, sort_keys=True))


@alerts_app.command("test")
def test_command(receiver: Annotated[str, typer.Argument(help="A receiver of the configuration.")],
                 control_dir: ControlDirOption = None, db_url: DbUrlOption = None, config: ConfigOption = None,
                 timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 60.0) -> None:
    """Send a test message to RECEIVER and say how it went (exit non-zero when it did not arrive)."""
    from control_plane.alerts.delivery import Deliverer
    from control_plane.alerts.engine import Emitter, receivers_of
    from control_plane.tables import NotificationRow

    settings = load(config)
    settings.receiver(receiver)
    where = Where(control_dir, db_url)
    engine = where.engine()
    emitter = Emitter(engine, settings, where.ack_key(settings))
    deliverer = Deliverer(receivers_of(settings), emitter.record)
    try:
        emitter.attach(deliverer, resume=False)  # only this message: pending ones are `serve`'s to resend
        notification = emitter.send_test(receiver)
        finished = deliverer.wait_idle(timeout)
        with Session(engine) as session:
            row = session.get(NotificationRow, notification)
            status = row.status if row is not None else "missing"
            attempts = actions.deliveries_of(session, notification)
    finally:
        deliverer.close()
        engine.dispose()
    for a in attempts:
        typer.echo(f"{a['receiver']} {a['url']} attempt {a['attempt']}: {a['outcome']}"
                   f"{' - ' + a['error'] if a['error'] else ''}")
    if status != "sent":
        raise ControlError(f"test message to {receiver}: {status if finished else 'not finished'} after "
                           f"{timeout:g} s")
    typer.echo(f"test message to {receiver}: sent")
