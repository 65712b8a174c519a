"""Sites and their replication cursors.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_push_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sites")
