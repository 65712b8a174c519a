"""The outbox: every replicated change, numbered without gaps in commit order.

The scheduler is the site database's only writer, so the next number is the current maximum
plus one, taken inside the same transaction as the change it describes (read once per
transaction, then counted on). Shipping it to the
control plane is :mod:`site_scheduler.shipper`'s; :func:`replay` is how a reader rebuilds the
site's tables from it. Each event carries its wall-clock commit time (the centre's replication
lag), which is never hashed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session, SessionTransaction

from site_scheduler.tables import REPLICATED, Base, OutboxRow, row_dict


def _key(row: Base) -> list[str]:
    return [str(getattr(row, column.name)) for column in type(row).__table__.primary_key.columns]


_NEXT_SEQ = "cinefleet.outbox.next_seq"


@orm_event.listens_for(Session, "after_transaction_end")
def _forget_next_seq(session: Session, transaction: SessionTransaction) -> None:
    """A rolled-back transaction's numbers were never used: the next one reads the maximum again."""
    session.info.pop(_NEXT_SEQ, None)


def _awaits_defaults(row: Base) -> bool:
    """A new row left a column with a default unset (the site's own code sets them all)."""
    return any(column.default is not None and getattr(row, column.name) is None
               for column in type(row).__table__.columns)


def append(session: Session, entity: str, row: Base, *, site_id: str, tenant_id: str, op: str = "upsert") -> int:
    """Record a row's new state."""
    if inspect(row).pending and _awaits_defaults(row):
        session.flush()  # column defaults are filled in at flush; the event must carry them
    return append_event(session, entity, _key(row), row_dict(row), site_id=site_id, tenant_id=tenant_id, op=op)


def append_event(session: Session, entity: str, key: list[str], data: dict[str, Any], *, site_id: str,
                 tenant_id: str, op: str = "upsert") -> int:
    """Record an event that is no row of a site table (a cost event)."""
    seq = session.info.get(_NEXT_SEQ) or (session.scalar(select(func.max(OutboxRow.seq))) or 0) + 1
    session.info[_NEXT_SEQ] = seq + 1
    session.add(OutboxRow(seq=seq, site_id=site_id, tenant_id=tenant_id, entity=entity, key=key, op=op, row=data,
                          committed_at=time.time()))
    return seq


def since(session: Session, seq: int, limit: int | None = None) -> list[OutboxRow]:
    query = select(OutboxRow).where(OutboxRow.seq > seq).order_by(OutboxRow.seq)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def event_dict(row: OutboxRow) -> dict[str, Any]:
    return {"seq": row.seq, "site_id": row.site_id, "tenant_id": row.tenant_id, "entity": row.entity,
            "key": row.key, "op": row.op, "row": row.row}


def replay(session: Session, events: Iterable[dict[str, Any]]) -> None:
    """Apply events in order to a database holding the replicated tables (upserts by primary key)."""
    for event in events:
        table = REPLICATED.get(event["entity"])
        if table is None:
            continue
        session.merge(table(**event["row"]))
    session.flush()
