"""Dashboard sign-in: a browser session opened with an API token, kept as a database row.

Why a server-side row and not a signed cookie: logout must end the session at once, and so must
revoking the token it was opened with or disabling its user, on the very next request. The cookie
holds a random session id; the row holds only its sha256 (reading the database lets nobody ride a
session), the user, the token id, a per-session CSRF secret and the session's clock. Signing in
goes through :meth:`People.authenticate`, so a web login is refused and audited exactly as an API
call with the same token would be.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from control_plane.audit import AuditLog, writing
from control_plane.people import People, Principal, Role
from control_plane.tables import TokenRow, UserRow, WebSessionRow

#: A session ends this long after sign-in, however busy.
LIFETIME_S = 12 * 3600.0
#: A session ends after this long without a request.
IDLE_S = 30 * 60.0
#: ``seen_at`` is written at most this often (a write per page view would serialize readers).
SEEN_RESOLUTION_S = 60.0
_sessions, _tokens, _users = WebSessionRow.__table__, TokenRow.__table__, UserRow.__table__


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class WebSession:
    """A live session: who it is, and the CSRF secret every form it posts must carry."""

    principal: Principal
    csrf: str
    expires_at: float

    def csrf_ok(self, submitted: str | None) -> bool:
        """Constant-time: the comparison's duration says nothing about how much of a guess was right."""
        return isinstance(submitted, str) and hmac.compare_digest(submitted.encode(), self.csrf.encode())


class Sessions:
    """Opens, finds and closes dashboard sessions in the fleet database."""

    def __init__(self, engine: Engine, people: People, audit: AuditLog | None = None, *,
                 lifetime_s: float = LIFETIME_S, idle_s: float = IDLE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine, self.people, self.audit = engine, people, audit or AuditLog()
        self.lifetime_s, self.idle_s, self._clock = lifetime_s, idle_s, clock

    def open(self, token: str, address: str) -> tuple[str, WebSession]:
        """Sign in with an API token; the cookie value and the session. ``Unauthenticated`` (audited) otherwise."""
        principal = self.people.authenticate(token.strip())
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._clock()
        with writing(self.engine) as connection:
            connection.execute(delete(_sessions).where(_sessions.c.expires_at < now))  # ended ones, in passing
            connection.execute(insert(_sessions).values(
                sha256=session_digest(session_id), user=principal.user, token_id=principal.token_id, csrf=csrf,
                created_at=now, expires_at=now + self.lifetime_s, seen_at=now))
            self.audit.append(connection, principal.user, "login", principal.token_id or "",
                              {"via": "dashboard", "address": address})
        return session_id, WebSession(principal, csrf, now + self.lifetime_s)

    def find(self, session_id: str | None) -> WebSession | None:
        """The live session behind a cookie; None (and the row deleted) when it has ended for any reason."""
        if not session_id:
            return None
        digest = session_digest(session_id)
        with self.engine.connect() as connection:
            row = connection.execute(
                select(_sessions.c.csrf, _sessions.c.expires_at, _sessions.c.seen_at, _tokens.c.token_id,
                       _tokens.c.revoked_at, _users.c.name, _users.c.role, _users.c.tenants, _users.c.disabled)
                .join(_tokens, _tokens.c.token_id == _sessions.c.token_id)
                .join(_users, _users.c.name == _sessions.c.user)
                .where(_sessions.c.sha256 == digest)).first()
        if row is None:
            return None
        now = self._clock()
        if row.revoked_at is not None or row.disabled or now >= row.expires_at or now - row.seen_at > self.idle_s:
            self.close(session_id)
            return None
        if now - row.seen_at >= SEEN_RESOLUTION_S:
            with writing(self.engine) as connection:
                connection.execute(update(_sessions).where(_sessions.c.sha256 == digest).values(seen_at=now))
        tenants = None if row.tenants is None else frozenset(json.loads(row.tenants))
        return WebSession(Principal(row.name, Role.parse(row.role), tenants, row.token_id), row.csrf, row.expires_at)

    def close(self, session_id: str | None) -> None:
        """Logout: the row goes, so the cookie is worthless even if it was copied."""
        if session_id:
            with writing(self.engine) as connection:
                connection.execute(delete(_sessions).where(_sessions.c.sha256 == session_digest(session_id)))


class LoginThrottle:
    """Failed sign-ins per client address in a sliding window: guessing tokens from one address is slowed.

    Kept in memory (per process): it bounds one attacker's rate at each centre, and costs no database
    write per guess. At most ``addresses`` addresses are tracked; the least recently failing go first.
    """

    def __init__(self, failures: int = 5, window_s: float = 60.0, addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.window_s, self.addresses, self._clock = failures, window_s, addresses, clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._seen.get(address, deque())
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            return max(0.0, self.window_s - (now - times[0])) if len(times) >= self.failures else 0.0

    def failed(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            times.append(now)
            self._seen[address] = times
            self._seen.move_to_end(address)
            while len(self._seen) > self.addresses:
                self._seen.popitem(last=False)
