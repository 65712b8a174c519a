"""Workers carry the media builds they reported, why they take no media work (site migration 0003) and
their drain's deadline (site migration 0004).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("builds", sa.JSON, nullable=True))
        batch.add_column(sa.Column("refused", sa.Text, nullable=True))
        batch.add_column(sa.Column("drain_until", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("drain_until")
        batch.drop_column("refused")
        batch.drop_column("builds")
