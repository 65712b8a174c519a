"""Opening the site database: migrate it to the current schema with Alembic, then hand out sessions."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from pipeline.registry import Base as RegistryBase
from pipeline.registry import sqlite_pragmas

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def open_engine(url: str) -> Engine:
    # pre-ping: a pooled connection a database restart cut is replaced on checkout, so the first call
    # after the restart succeeds instead of failing once on a dead socket.
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_pragmas)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the site tables to head (Alembic) and create the artifact registry's tables."""
    # Imported here: only the scheduler migrates, and Alembic costs every site command half a second.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    RegistryBase.metadata.create_all(engine)
