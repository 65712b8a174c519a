"""Who may use the centre: users with a role (viewer < operator < admin), optionally limited to tenants,
and the bearer tokens that authenticate them.

Default deny: a token is accepted only when its sha256 is recorded, it is not revoked and its user
is not disabled; anything else is refused the same way (the caller learns nothing about which).
Tokens are random (``secrets``), shown once when made and stored only as their sha256, so the
database alone lets nobody act as anyone. Every user or token change, first login and refused
token is an audit row. No transport here: the HTTP API and the CLI are adapters.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from control_plane.audit import AuditLog, canonical, writing
from control_plane.errors import Conflict, ControlInputError, Forbidden, NotFound, Unauthenticated
from control_plane.tables import TokenRow, UserRow

#: Names of users and tenants: they appear in audit rows, signed payloads and URLs.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
#: Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "cft_"
#: A token's last-used time is written at most this often (a write per request would serialize readers).
LAST_USED_RESOLUTION_S = 60.0
_users, _tokens = UserRow.__table__, TokenRow.__table__


class Role(IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str, field: str = "role") -> Role:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ControlInputError(f"{field}: value {value!r}: expected one of viewer, operator, admin") from None


def check_name(value: str, field: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ControlInputError(f"{field}: value {value!r}: expected a name matching {NAME_PATTERN.pattern}")
    return value


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its user, role and tenants (None: every tenant)."""

    user: str
    role: Role
    tenants: frozenset[str] | None
    token_id: str | None = None

    def allows_tenant(self, tenant: str | None) -> bool:
        """Whether this caller may see or act on ``tenant``; site-wide things (None) need every tenant."""
        return self.tenants is None or (tenant is not None and tenant in self.tenants)

    def require(self, role: Role, tenant: str | None = None, *, any_tenant: bool = False) -> None:
        """Refuse (``Forbidden``) unless the role is at least ``role`` and the tenant is allowed.

        ``any_tenant`` skips the tenant check: for endpoints that filter what they return by tenant.
        """
        if self.role < role:
            raise Forbidden(f"user {self.user!r} is {self.role.label}; this needs {role.label} or above")
        if not any_tenant and not self.allows_tenant(tenant):
            where = f"tenant {tenant!r}" if tenant is not None else "site-wide targets (every tenant)"
            raise Forbidden(f"user {self.user!r} is limited to tenants {sorted(self.tenants or ())}; "
                            f"this acts on {where}")

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "role": self.role.label,
                "tenants": None if self.tenants is None else sorted(self.tenants), "token_id": self.token_id}


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    tenants: tuple[str, ...] | None
    disabled: bool
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.label, "tenants": None if self.tenants is None else
                list(self.tenants), "disabled": self.disabled, "created_at": self.created_at}


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``token`` is shown this once and never stored."""

    token_id: str
    user: str
    token: str = ""

    def __repr__(self) -> str:  # never let the secret reach a log through a repr
        return f"NewToken(token_id={self.token_id!r}, user={self.user!r})"


class People:
    """Users and tokens in the fleet database; ``actor`` of each change is who made it (a user or ``cli``)."""

    def __init__(self, engine: Engine, audit: AuditLog | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.audit, self._clock = engine, audit or AuditLog(), clock

    def add_user(self, name: str, role: str, tenants: Iterable[str] | None = None, *, actor: str = "cli") -> User:
        check_name(name, "name")
        level = Role.parse(role)
        listed = None if tenants is None else tuple(sorted({check_name(t, "tenant") for t in tenants}))
        if listed == ():
            raise ControlInputError("tenant: an empty list: expected at least one tenant, or none given for all")
        now = self._clock()
        with writing(self.engine) as connection:
            if connection.execute(select(_users.c.name).where(_users.c.name == name)).first() is not None:
                raise Conflict(f"user {name!r} already exists")
            connection.execute(insert(_users).values(name=name, role=level.label, disabled=False, created_at=now,
                                                     tenants=None if listed is None else canonical(list(listed))))
            self.audit.append(connection, actor, "user", name, {"change": "add", "role": level.label,
                                                                 "tenants": listed})
        return User(name, level, listed, False, now)

    def users(self) -> list[User]:
        with self.engine.connect() as connection:
            return [_user(r) for r in connection.execute(select(_users).order_by(_users.c.name))]

    def disable(self, name: str, *, actor: str = "cli") -> None:
        """Disable a user: every token of theirs stops working at once (authenticate checks the user)."""
        with writing(self.engine) as connection:
            if connection.execute(update(_users).where(_users.c.name == name).values(disabled=True)).rowcount != 1:
                raise NotFound(f"user {name!r}: no such user")
            self.audit.append(connection, actor, "user", name, {"change": "disable"})

    def create_token(self, user: str, *, actor: str = "cli") -> NewToken:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        made = NewToken(secrets.token_hex(8), user, token)
        with writing(self.engine) as connection:
            row = connection.execute(select(_users).where(_users.c.name == user)).first()
            if row is None:
                raise NotFound(f"user {user!r}: no such user")
            if row.disabled:
                raise Conflict(f"user {user!r} is disabled; a token for them would be refused")
            connection.execute(insert(_tokens).values(token_id=made.token_id, user=user, sha256=token_digest(token),
                                                      created_at=self._clock()))
            self.audit.append(connection, actor, "token", made.token_id, {"change": "create", "user": user})
        return made

    def revoke(self, token_id: str, *, actor: str = "cli") -> None:
        with writing(self.engine) as connection:
            row = connection.execute(select(_tokens).where(_tokens.c.token_id == token_id)).first()
            if row is None:
                raise NotFound(f"token {token_id!r}: no such token id")
            if row.revoked_at is not None:
                raise Conflict(f"token {token_id!r} is already revoked")
            connection.execute(update(_tokens).where(_tokens.c.token_id == token_id).values(revoked_at=self._clock()))
            self.audit.append(connection, actor, "token", token_id, {"change": "revoke", "user": row.user})

    def tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """Token ids, owners and times (never a hash: it is not needed to manage them)."""
        query = select(_tokens.c.token_id, _tokens.c.user, _tokens.c.created_at, _tokens.c.last_used_at,
                       _tokens.c.revoked_at).order_by(_tokens.c.created_at)
        if user is not None:
            query = query.where(_tokens.c.user == user)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    def authenticate(self, token: str | None) -> Principal:
        """The principal behind ``token``; ``Unauthenticated`` for anything but a live token of an enabled user.

        The first use of a token is audited as a login, every refusal as a refused request.
        """
        row = None
        if token:
            with self.engine.connect() as connection:
                row = connection.execute(
                    select(_tokens.c.token_id, _tokens.c.revoked_at, _tokens.c.last_used_at, _users)
                    .join(_users, _users.c.name == _tokens.c.user)
                    .where(_tokens.c.sha256 == token_digest(token))).first()
        if row is None or row.revoked_at is not None or row.disabled:
            why = ("no token" if not token else "unknown token" if row is None else
                   "revoked token" if row.revoked_at is not None else "disabled user")
            with writing(self.engine) as connection:
                self.audit.append(connection, row.name if row is not None else "anonymous", "refused", "authenticate",
                                  {"reason": why, "token_id": row.token_id if row is not None else None})
            raise Unauthenticated("a valid bearer token is required (unknown, revoked, or its user is disabled)")
        now = self._clock()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_S:
            with writing(self.engine) as connection:
                connection.execute(update(_tokens).where(_tokens.c.token_id == row.token_id).values(last_used_at=now))
                if row.last_used_at is None:
                    self.audit.append(connection, row.name, "login", row.token_id, {"first_use": True})
        return Principal(row.name, Role.parse(row.role), None if row.tenants is None else
                         frozenset(json.loads(row.tenants)), row.token_id)


def _user(row: Any) -> User:
    return User(row.name, Role.parse(row.role), None if row.tenants is None else tuple(json.loads(row.tenants)),
                bool(row.disabled), row.created_at)
