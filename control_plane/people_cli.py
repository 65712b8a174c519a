"""The centre's people commands: ``cinefleet control user add|list|disable``, ``control token create|list|revoke``,
``control signer`` and ``cinefleet audit verify --db``.

They act on the fleet database directly (``--data-dir DIR`` for its SQLite file, or ``--db-url``), as an
administrator on the centre's machine does; every change is an audit row with actor ``cli``. Commands
raise the control plane's errors and print nothing about them: ``cinefleet`` maps each to its
message and exit code in one place.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from control_plane import audit
from control_plane.commands import parse_policy
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.errors import ControlInputError
from control_plane.people import People
from control_plane.signer import DEFAULT_CHECKPOINT_INTERVAL_S, serve
from ops_agent.keys import read_public_key

#: The fleet database's file in the centre's data folder (SQLite, the default).
FLEET_DB = "fleet.db"

user_app = typer.Typer(help="Users of the centre and their roles.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once, stored as hashes).", no_args_is_help=True)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help=f"The centre's data folder ({FLEET_DB}).")]
DbUrlOption = Annotated[str | None, typer.Option("--db-url", help="The fleet database (SQLAlchemy URL), "
                                                                  "instead of DATA_DIR's SQLite file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def database_url(data_dir: Path | None, db_url: str | None) -> str:
    """The fleet database's URL from ``--db-url`` or ``--data-dir`` (exactly one)."""
    if (data_dir is None) == (db_url is None):
        raise ControlInputError("--data-dir / --db-url: expected exactly one of them")
    if db_url is not None:
        return db_url
    assert data_dir is not None
    if not data_dir.is_dir():
        raise ControlInputError(f"--data-dir: value {str(data_dir)!r}: expected an existing folder")
    return sqlite_url(data_dir / FLEET_DB)


def fleet_engine(data_dir: Path | None, db_url: str | None) -> Engine:
    """The fleet database, migrated to head (a first command on a new folder creates it)."""
    engine = open_engine(database_url(data_dir, db_url))
    migrate(engine)
    return engine


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")],
    tenant: Annotated[list[str] | None, typer.Option("--tenant", help="Limit the user to this tenant; "
                                                                      "repeat for several (default: all).")] = None,
    data_dir: DataDirOption = None, db_url: DbUrlOption = None,
) -> None:
    """Add a user with a role, optionally limited to tenants."""
    user = People(fleet_engine(data_dir, db_url)).add_user(name, role, tenant or None)
    tenants = ", ".join(user.tenants) if user.tenants is not None else "all tenants"
    typer.echo(f"user {user.name}: {user.role.label} ({tenants})")


@user_app.command("list")
def user_list(data_dir: DataDirOption = None, db_url: DbUrlOption = None, as_json: JsonOption = False) -> None:
    """List users, their roles, tenants and whether they are disabled."""
    users = People(fleet_engine(data_dir, db_url)).users()
    if as_json:
        typer.echo(json.dumps([u.as_dict() for u in users], sort_keys=True))
        return
    for user in users:
        tenants = ",".join(user.tenants) if user.tenants is not None else "*"
        typer.echo(f"{user.name}\t{user.role.label}\t{tenants}{chr(9) + 'disabled' if user.disabled else ''}")


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument(help="The user's name.")],
                 data_dir: DataDirOption = None, db_url: DbUrlOption = None) -> None:
    """Disable a user: every token of theirs is refused from now on."""
    People(fleet_engine(data_dir, db_url)).disable(name)
    typer.echo(f"user {name}: disabled")


@token_app.command("create")
def token_create(user: Annotated[str, typer.Argument(help="The user the token acts as.")],
                 data_dir: DataDirOption = None, db_url: DbUrlOption = None, as_json: JsonOption = False) -> None:
    """Make a token for USER and print it once (only its sha256 is kept)."""
    made = People(fleet_engine(data_dir, db_url)).create_token(user)
    if as_json:
        typer.echo(json.dumps({"token_id": made.token_id, "user": made.user, "token": made.token}, sort_keys=True))
        return
    typer.echo(f"token {made.token_id} for {made.user} (shown once; keep it secret):")
    typer.echo(made.token)


@token_app.command("list")
def token_list(user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
               data_dir: DataDirOption = None, db_url: DbUrlOption = None, as_json: JsonOption = False) -> None:
    """List token ids, their users, and when each was made, last used and revoked (never a token or hash)."""
    tokens = People(fleet_engine(data_dir, db_url)).tokens(user)
    if as_json:
        typer.echo(json.dumps(tokens, sort_keys=True))
        return
    for t in tokens:
        state = "revoked" if t["revoked_at"] is not None else "never used" if t["last_used_at"] is None else (
            f"last used {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t['last_used_at']))}")
        typer.echo(f"{t['token_id']}\t{t['user']}\t{state}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (from `token create`).")],
                 data_dir: DataDirOption = None, db_url: DbUrlOption = None) -> None:
    """Revoke a token: it is refused from now on."""
    People(fleet_engine(data_dir, db_url)).revoke(token_id)
    typer.echo(f"token {token_id}: revoked")


def signer(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The centre's data folder: the key in DIR/keys, "
                                                              "the socket DIR/signer.sock.")],
    db_url: DbUrlOption = None,
    socket_path: Annotated[Path | None, typer.Option("--socket", help="The Unix socket (default "
                                                                      "DATA_DIR/signer.sock).")] = None,
    approval: Annotated[list[str] | None, typer.Option("--approval", help="An action that needs a second "
                                                                          "person's approval; repeatable.")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Audit rows between signed checkpoints.")] =
    audit.DEFAULT_CHECKPOINT_EVERY,
    checkpoint_interval: Annotated[float, typer.Option(help="Seconds between timed checkpoints.")] =
    DEFAULT_CHECKPOINT_INTERVAL_S,
) -> None:
    """Hold the signing key and sign only commands the database shows requested (and confirmed, approved)."""
    if not data_dir.is_dir():
        raise ControlInputError(f"--data-dir: value {str(data_dir)!r}: expected an existing folder")
    policy = parse_policy(approval or ())  # checked before anything is written
    if checkpoint_every < 1 or checkpoint_interval <= 0:
        raise ControlInputError(f"--checkpoint-every {checkpoint_every}, --checkpoint-interval "
                                f"{checkpoint_interval}: expected at least 1 row and more than 0 seconds")
    engine = fleet_engine(None if db_url else data_dir, db_url)
    try:
        serve(data_dir, engine, socket_path=socket_path, policy=policy,
                             checkpoint_every=checkpoint_every, checkpoint_interval=checkpoint_interval)
    finally:
        engine.dispose()


def audit_verify(db: str, key: Path | None, as_json: bool) -> None:
    """Walk the centre's audit chain and checkpoints; raise ``AuditBroken`` naming the first bad row."""
    trusted = read_public_key(key) if key is not None else None
    engine = open_engine(db)
    try:
        database = engine.url.database
        if engine.dialect.name == "sqlite" and (not database or not Path(database).is_file()):
            raise ControlInputError(f"--db: value {db!r}: expected an existing fleet database file")
        if not inspect(engine).has_table("audit"):
            raise ControlInputError(f"--db: value {db!r}: expected a fleet database (it has no audit table)")
        report = audit.verify(engine, trusted)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), sort_keys=True))
    if not report.ok:
        raise audit.AuditBroken(str(report))
    if not as_json:
        typer.echo(str(report))
