"""A digest of what a site replicates, read from the site's own database and from the centre's, to compare.

The site's tables are read with the site's columns; the centre's rows of that site are read
with the same columns, so the two digests are equal exactly when every replicated row arrived
in its latest state (nothing lost, nothing stale, nothing extra).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane import tables as fleet
from site_scheduler import tables as site

#: Site table → the centre's table of the same rows.
PAIRS: tuple[tuple[type[Any], type[Any]], ...] = (
    (site.RunRow, fleet.RunRow), (site.StageRow, fleet.StageRow), (site.WorkerRow, fleet.WorkerRow),
    (site.QueueRow, fleet.QueueRow), (site.HostRow, fleet.SiteHostRow),
)


def _rows(session: Session, table: type[Any], columns: list[str], where: Any = None) -> list[str]:
    query = select(table) if where is None else select(table).where(where)
    return sorted(json.dumps({c: getattr(r, c) for c in columns}, sort_keys=True, default=str)
                  for r in session.scalars(query))


def site_digest(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {mine.__tablename__: hashlib.sha256("\n".join(_rows(session, mine, _columns(mine))).encode())
                .hexdigest() for mine, _theirs in PAIRS}


def centre_digest(engine: Engine, site_id: str) -> dict[str, str]:
    with Session(engine) as session:
        return {mine.__tablename__: hashlib.sha256("\n".join(
            _rows(session, theirs, _columns(mine), theirs.site_id == site_id)).encode()).hexdigest()
            for mine, theirs in PAIRS}


def _columns(table: type[Any]) -> list[str]:
    return [c.name for c in table.__table__.columns]
