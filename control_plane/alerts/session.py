"""Write transactions for the alert engine and the actions on alerts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """An ORM session whose transaction holds the database's write lock from its start; committed on exit.

    Why not a session over :func:`control_plane.audit.writing`'s connection: a session joined to a
    connection it does not own can roll back what it wrote on PostgreSQL. This session owns its
    connection; on SQLite it begins IMMEDIATE (a read-then-write transaction could not upgrade its lock
    under a concurrent writer), and objects stay readable after the commit (they are handed to delivery).
    """
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
