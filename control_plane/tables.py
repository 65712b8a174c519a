"""The fleet database: what the centre knows of every site, and (in later migrations) hosts, workers,
queues, runs, stages, commands, people and the audit chain."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, LargeBinary, String, Table, Text
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


# -- people, commands and the audit chain (migration 0003) ---------------------------------------


class UserRow(Base):
    """A person (or program) who may use the centre: a role, and the tenants it is limited to (NULL: all)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    #: Canonical JSON list of tenant ids, or NULL for every tenant.
    tenants: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class TokenRow(Base):
    """An API token: only its sha256 is kept; ``token_id`` is the public handle that revokes it."""

    __tablename__ = "tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class CommandRow(Base):
    """An operator's command from request to outcome; the signer reads it to decide what it may sign."""

    __tablename__ = "commands"

    command_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    #: The tenant whose run the command acts on; NULL for site-wide targets (workers, queues).
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    #: Canonical JSON list of the target's ids, in ``protos.actions`` order.
    target: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(64))
    requester_role: Mapped[str] = mapped_column(String(16))
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approver: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: The serialized SignedCommand the signer produced (public: it holds no secret).
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    payload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    updated_at: Mapped[float] = mapped_column(Float)
    approved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    signed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    dispatched_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRow(Base):
    """One link of the hash chain: ``hash`` = sha256 over the canonical bytes of every other field."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24), index=True)
    subject: Mapped[str] = mapped_column(String(256), index=True)
    #: Canonical JSON (sorted keys, no spaces): hashed as stored.
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain's one head row: every append locks it first, so appends are serialized and never fork."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    """A signed statement "the chain had reached ``seq`` with ``hash``": cutting the tail off is then detected."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    key_id: Mapped[str] = mapped_column(String(64))
    #: The raw public key, base64 (informative: ``audit verify --key`` checks against the signer's own file).
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))
