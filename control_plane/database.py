"""Opening the fleet database: migrate it to the current schema with Alembic, then hand out sessions.

SQLite in the centre's data folder by default, PostgreSQL with ``--db-url``; the centre keeps no
state outside it, so two centres on one PostgreSQL serve the same fleet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL, so readers never block the single writer, and a busy timeout instead of errors."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def open_engine(url: str) -> Engine:
    # pre-ping: a pooled connection a database restart cut is replaced on checkout, so the first call
    # after the restart succeeds instead of failing once on a dead socket.
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_pragmas)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the fleet tables to head (Alembic)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
