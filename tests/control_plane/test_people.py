"""Users, roles, tenants and tokens: default deny, tokens stored only as hashes, every change audited."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cinefleet.cli import app
from control_plane import audit
from control_plane.database import open_engine, sqlite_url
from control_plane.errors import Conflict, ControlInputError, Forbidden, NotFound, Unauthenticated
from control_plane.people import People, Principal, Role
from control_plane.tables import TokenRow


def _kinds(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        return [(e.actor, e.kind, e.subject) for e in audit.entries(connection, limit=1000)]


def test_a_token_authenticates_its_user_until_revoked_or_the_user_is_disabled(engine: Engine) -> None:
    people = People(engine)
    people.add_user("ana", "operator", ["t-a", "t-b"])
    people.add_user("bo", "viewer")
    made = people.create_token("ana")
    assert made.token.startswith("cft_") and made.token not in repr(made)
    principal = people.authenticate(made.token)
    assert principal == Principal("ana", Role.OPERATOR, frozenset({"t-a", "t-b"}), made.token_id)
    # Only the sha256 is stored: the token itself is nowhere in the database
    with engine.connect() as connection:
        dump = "\n".join(connection.connection.driver_connection.iterdump())  # type: ignore[union-attr]
        row = connection.execute(select(TokenRow.__table__).where(TokenRow.token_id == made.token_id)).one()
    assert made.token not in dump and made.token[4:] not in dump
    assert row.last_used_at is not None and row.revoked_at is None
    # Default deny: no token, an unknown one, a revoked one, a disabled user's
    with pytest.raises(Unauthenticated):
        people.authenticate(None)
    with pytest.raises(Unauthenticated):
        people.authenticate(made.token + "x")
    second = people.create_token("ana")
    people.revoke(made.token_id)
    with pytest.raises(Unauthenticated):
        people.authenticate(made.token)
    assert people.authenticate(second.token).user == "ana", "revoking one token leaves the others"
    bo = people.create_token("bo")
    assert people.authenticate(bo.token).role is Role.VIEWER
    people.disable("bo")
    with pytest.raises(Unauthenticated):
        people.authenticate(bo.token)
    with pytest.raises(Conflict):
        people.create_token("bo")
    # Every change, first login and refusal is an audit row, and the chain verifies
    kinds = _kinds(engine)
    assert ("cli", "token", made.token_id) in kinds and ("ana", "login", made.token_id) in kinds
    assert [k for k in kinds if k[1] == "login"].count(("ana", "login", made.token_id)) == 1, "first use only"
    assert [k[1] for k in kinds].count("refused") == 4
    assert ("cli", "user", "bo") in kinds
    assert audit.verify(engine).ok


def test_bad_input_names_the_field_and_changes_nothing(engine: Engine) -> None:
    people = People(engine)
    with pytest.raises(ControlInputError, match="role: value 'root'"):
        people.add_user("ana", "root")
    with pytest.raises(ControlInputError, match="name: value 'a b'"):
        people.add_user("a b", "viewer")
    with pytest.raises(ControlInputError, match="tenant: value ''"):
        people.add_user("ana", "viewer", [""])
    assert people.users() == [] and _kinds(engine) == []
    people.add_user("ana", "viewer")
    with pytest.raises(Conflict, match="already exists"):
        people.add_user("ana", "admin")
    with pytest.raises(NotFound):
        people.create_token("nobody")
    with pytest.raises(NotFound):
        people.revoke("0123456789abcdef")
    with pytest.raises(NotFound):
        people.disable("nobody")


def test_require_orders_roles_and_limits_tenants() -> None:
    limited = Principal("ana", Role.OPERATOR, frozenset({"t-a"}))
    everyone = Principal("root", Role.ADMIN, None)
    limited.require(Role.VIEWER, "t-a")
    limited.require(Role.OPERATOR, "t-a")
    with pytest.raises(Forbidden, match="needs admin"):
        limited.require(Role.ADMIN, "t-a")
    with pytest.raises(Forbidden, match="tenant 't-b'"):
        limited.require(Role.VIEWER, "t-b")
    with pytest.raises(Forbidden, match="site-wide"):
        limited.require(Role.OPERATOR, None)
    limited.require(Role.VIEWER, None, any_tenant=True)
    everyone.require(Role.ADMIN, "t-b")
    everyone.require(Role.ADMIN, None)


def _cli(*args: str | Path) -> Ran:
    """``cinefleet ARGS`` in this process (the real command tree and its exit-code mapping, without the startup)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return Ran(result.exit_code, result.stdout, result.stderr)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def test_the_user_and_token_commands(tmp_path: Path) -> None:
    where = ["--data-dir", str(tmp_path)]
    added = _cli("control", "user", "add", "ana", "--role", "operator", "--tenant", "t-a", *where)
    assert added.returncode == 0 and "ana: operator (t-a)" in added.stdout, added.stderr
    assert _cli("control", "user", "add", "root", "--role", "admin", *where).returncode == 0
    listed = json.loads(_cli("control", "user", "list", "--json", *where).stdout)
    assert [(u["name"], u["role"], u["tenants"]) for u in listed] == [("ana", "operator", ["t-a"]),
                                                                        ("root", "admin", None)]
    created = _cli("control", "token", "create", "ana", *where)
    assert created.returncode == 0, created.stderr
    token_id = created.stdout.split()[1]
    token = created.stdout.splitlines()[-1]
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    try:
        assert People(engine).authenticate(token).user == "ana"
        listed_tokens = json.loads(_cli("control", "token", "list", "--json", *where).stdout)
        assert [(t["token_id"], t["user"], t["revoked_at"]) for t in listed_tokens] == [(token_id, "ana", None)]
        assert token not in json.dumps(listed_tokens) and listed_tokens[0]["last_used_at"] is not None
        assert _cli("control", "token", "revoke", token_id, *where).returncode == 0
        assert "revoked" in _cli("control", "token", "list", "--user", "ana", *where).stdout
        with pytest.raises(Unauthenticated):
            People(engine).authenticate(token)
    finally:
        engine.dispose()
    assert "disabled" in _cli("control", "user", "disable", "ana", *where).stdout
    # Bad input: exit 2, the field named, nothing written
    bad = _cli("control", "user", "add", "eve", "--role", "root", *where)
    assert bad.returncode == 2 and "role: value 'root'" in bad.stderr
    assert _cli("control", "token", "revoke", "nope", *where).returncode == 2
    missing = _cli("control", "user", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--data-dir" in missing.stderr and not (tmp_path / "nowhere").exists()
    assert _cli("control", "user", "list").returncode == 2
    with open_engine(sqlite_url(tmp_path / "fleet.db")).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar_one() == 2
