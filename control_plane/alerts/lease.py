"""The emitter's lease: of several ``alerts serve`` on one fleet database, one sends and the others stand by.

Why a row and not an advisory lock: SQLite has none, and a lock held by a connection dies with
whatever pool or proxy owns it. The lease is the ``alert_lease`` row named ``emitter``; an emitter
takes or renews it with one conditional UPDATE (``WHERE expires_at < now OR holder = me``) inside the
transaction that also writes that tick's alerts and notifications. SQLite runs that transaction under
its write lock, PostgreSQL re-checks the WHERE on the row it waited for, so exactly one emitter's
UPDATE matches; the other's tick writes nothing but its own ``standby …`` row (for ``alerts list``).

Times are the emitters' clocks: emitters on different machines must keep them in step (NTP) to a small
fraction of the lease.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.alerts.session import write_session
from control_plane.tables import LeaseRow

#: The lease row's name; every other row is a standby's.
LEASE = "emitter"
_STANDBY = "standby "


@dataclass(frozen=True)
class Holder:
    """One emitter process: a unique id, plus host and pid for the humans reading ``alerts list``."""

    id: str
    host: str
    pid: int

    @classmethod
    def here(cls) -> Holder:
        """This process, with a fresh id (a restarted emitter is a new holder)."""
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid())

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid} ({self.id[:8]})"


def claim(session: Session, holder: Holder, now: float, ttl: float) -> bool:
    """Take or renew the lease in ``session``'s transaction; False (and a standby row kept) if another holds it."""
    table = LeaseRow.__table__
    taken = session.execute(
        update(table).where(table.c.name == LEASE, (table.c.expires_at < now) | (table.c.holder == holder.id))
        .values(holder=holder.id, host=holder.host, pid=holder.pid, expires_at=now + ttl,
                acquired_at=case((table.c.holder == holder.id, table.c.acquired_at), else_=now)))
    standby = _STANDBY + holder.id
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        # Our own standby row, and those of standbys gone for good, are no longer news.
        session.execute(delete(table).where(table.c.name.startswith(_STANDBY),
                                            (table.c.name == standby) | (table.c.expires_at < now - ttl)))
        return True
    row = session.get(LeaseRow, standby)
    if row is None:
        session.add(LeaseRow(name=standby, holder=holder.id, host=holder.host, pid=holder.pid, acquired_at=now,
                             expires_at=now + ttl))
    else:
        row.expires_at = now + ttl
    return False


def release(engine: Engine, holder: Holder) -> None:
    """On a clean stop: expire our lease at once (a standby takes over on its next tick) and drop our standby row."""
    with write_session(engine) as session:
        table = LeaseRow.__table__
        session.execute(update(table).where(table.c.name == LEASE, table.c.holder == holder.id)
                        .values(expires_at=0.0))
        session.execute(delete(table).where(table.c.name == _STANDBY + holder.id))


def emitters(session: Session, now: float) -> list[dict[str, Any]]:
    """The emitters the database knows of, active first: what ``alerts list`` and the status show."""
    out = []
    for row in session.scalars(select(LeaseRow).order_by(LeaseRow.name)):
        if row.name == LEASE:
            if not row.holder:
                continue
            role = "active" if row.expires_at >= now else "expired"
        elif row.expires_at >= now:
            role = "standby"
        else:
            continue
        out.append({"role": role, "holder": row.holder, "host": row.host, "pid": row.pid,
                    "since": row.acquired_at, "expires_at": row.expires_at})
    return sorted(out, key=lambda e: e["role"] != "active")
