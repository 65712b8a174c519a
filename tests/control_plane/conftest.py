"""A throwaway PostgreSQL cluster for the control plane's tests, and a fresh database in it per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.site_scheduler.postgres import postgres_cluster


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture
def postgres_db(postgres: str) -> str:
    """A new, empty database on the module's cluster; its URL."""
    name = f"fleet_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres.rsplit("/", 1)[0] + f"/{name}"
