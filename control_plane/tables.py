"""The fleet database: what the centre knows of every site, and (in later migrations) hosts, workers,
queues, runs, stages, commands, people and the audit chain."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import BigInteger, Float, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    # Every mapped class is declared with __tablename__, so its __table__ is a Table.
    __table__: ClassVar[Table]


class SiteRow(Base):
    """A site as replication knows it: the cursor is the last outbox seq applied, in order, exactly once."""

    __tablename__ = "sites"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen_at: Mapped[float] = mapped_column(Float)
    last_push_at: Mapped[float | None] = mapped_column(Float, nullable=True)
