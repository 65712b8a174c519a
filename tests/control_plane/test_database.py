"""The fleet database migrates from nothing to head, and again without change."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.tables import Base


def test_a_new_fleet_database_migrates_to_head_twice(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    try:
        migrate(engine)
        migrate(engine)  # already at head: a second start changes nothing
        tables = set(inspect(engine).get_table_names())
        assert {"sites", "alembic_version"} <= tables
    finally:
        engine.dispose()


def test_the_migrations_make_exactly_the_tables_the_code_maps(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path / "fleet.db"))
    try:
        migrate(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
