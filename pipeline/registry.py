"""The artifact registry: what each stored blob is and where it came from (spec §14).

Three tables. ``artifacts`` describes each stored blob (kind, schema version, parents, creation
parameters, compute origin, site, tenant, licence). ``derivations`` maps a stage's input key
to the artifact it produced, which is how a re-run skips finished work and an interrupted run
resumes. ``asset_cache`` remembers resolved assets by id, the resolver's second tier.

Artifact and derivation rows are inserted once and never updated. An asset-cache row follows the
library: it points at the last image resolved for that asset id.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Integer, String, Table, create_engine, event, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    # Every mapped class here is declared with __tablename__, so its __table__ is a Table (the
    # base class types it as the wider FromClause, which has no typed primary key or insert).
    __table__: ClassVar[Table]


class ArtifactRow(Base):
    __tablename__ = "artifacts"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    schema_version: Mapped[str | None] = mapped_column(String(32))
    parents: Mapped[list[str]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    compute_origin: Mapped[str] = mapped_column(String(16))
    license: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)
    # Bookkeeping only: never part of any hashed content.
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class DerivationRow(Base):
    __tablename__ = "derivations"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64))
    output_hash: Mapped[str] = mapped_column(String(64))


class AssetCacheRow(Base):
    __tablename__ = "asset_cache"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    license: Mapped[dict[str, Any]] = mapped_column(JSON)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL, so readers never block the single writer, and a busy timeout instead of errors."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


class Registry:
    """Insert-once bookkeeping over any SQLAlchemy database (SQLite by default)."""

    def __init__(self, url: str | Engine) -> None:
        """Open ``url``, or share an engine its owner already set up (the site's scheduler does)."""
        if isinstance(url, Engine):
            self.engine = url
        else:
            self.engine = create_engine(url)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", sqlite_pragmas)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _insert_once(self, row: Base) -> None:
        with Session(self.engine) as session, session.begin():
            table = type(row).__table__
            values = {column.name: getattr(row, column.name) for column in table.columns}
            if self.engine.dialect.name == "sqlite":
                session.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
            elif session.get(type(row), tuple(values[c.name] for c in table.primary_key.columns)) is None:
                session.add(row)

    def record_artifact(
        self,
        *,
        tenant_id: str,
        site_id: str,
        digest: str,
        kind: str,
        size: int,
        schema_version: str | None = None,
        parents: list[str] | None = None,
        params: dict[str, Any] | None = None,
        compute_origin: str = "local",
        license: dict[str, Any] | None = None,
    ) -> None:
        self._insert_once(
            ArtifactRow(
                tenant_id=tenant_id,
                hash=digest,
                site_id=site_id,
                kind=kind,
                schema_version=schema_version,
                parents=parents or [],
                params=params or {},
                compute_origin=compute_origin,
                license=license,
                size=size,
                recorded_at=dt.datetime.now(dt.UTC),
            )
        )

    def artifact(self, tenant_id: str, digest: str) -> ArtifactRow | None:
        with Session(self.engine) as session:
            return session.get(ArtifactRow, (tenant_id, digest))

    def artifacts(self, tenant_id: str, kind: str | None = None) -> list[ArtifactRow]:
        query = select(ArtifactRow).where(ArtifactRow.tenant_id == tenant_id)
        if kind is not None:
            query = query.where(ArtifactRow.kind == kind)
        with Session(self.engine) as session:
            return list(session.scalars(query.order_by(ArtifactRow.kind, ArtifactRow.hash)))

    def remember(self, tenant_id: str, key: str, stage: str, output_hash: str) -> None:
        self._insert_once(DerivationRow(tenant_id=tenant_id, key=key, stage=stage, output_hash=output_hash))

    def derived(self, tenant_id: str, key: str) -> str | None:
        with Session(self.engine) as session:
            row = session.get(DerivationRow, (tenant_id, key))
            return row.output_hash if row else None

    def cache_asset(self, tenant_id: str, asset_id: str, digest: str, license: dict[str, Any]) -> None:
        with Session(self.engine) as session, session.begin():
            session.merge(AssetCacheRow(tenant_id=tenant_id, asset_id=asset_id, hash=digest, license=license))

    def cached_asset(self, tenant_id: str, asset_id: str) -> AssetCacheRow | None:
        with Session(self.engine) as session:
            return session.get(AssetCacheRow, (tenant_id, asset_id))
