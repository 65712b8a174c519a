"""The registry rows a workspace made, as plain data that travels to the scheduler in a message.

Workers and the submitting client write artifacts to the store but never the site database:
they work on a registry in memory and send its rows; the scheduler, the database's only
writer, records them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.registry import ArtifactRow, AssetCacheRow, Base, DerivationRow

if TYPE_CHECKING:  # the workspace brings every document model; the messages that carry rows need none
    from pipeline.workspace import Workspace

Rows = dict[str, list[dict[str, Any]]]


def registry_rows(ws: Workspace) -> Rows:
    with Session(ws.registry.engine) as session:
        def dump(table: type[Base]) -> list[dict[str, Any]]:
            return [
                {column.name: getattr(row, column.name) for column in table.__table__.columns}
                for row in session.scalars(select(table))
            ]

        artifacts = dump(ArtifactRow)
        for row in artifacts:
            row.pop("recorded_at", None)
        return {"artifacts": artifacts, "derivations": dump(DerivationRow), "asset_cache": dump(AssetCacheRow)}


def record_rows(session: Session, rows: Rows, site_id: str, emit: Callable[[Session, str, Any], int]) -> None:
    """Insert registry rows made elsewhere (a worker, a submitting client), once each.

    A new artifact goes to the outbox too; derivations and the asset cache stay local.
    """
    for row in rows.get("artifacts", []):
        if session.get(ArtifactRow, (row["tenant_id"], row["hash"])) is None:
            record = ArtifactRow(**{**row, "site_id": site_id}, recorded_at=dt.datetime.now(dt.UTC))
            session.add(record)
            emit(session, "artifact", record)
    for row in rows.get("derivations", []):
        if session.get(DerivationRow, (row["tenant_id"], row["key"])) is None:
            session.add(DerivationRow(**row))
    for row in rows.get("asset_cache", []):
        session.merge(AssetCacheRow(**row))
