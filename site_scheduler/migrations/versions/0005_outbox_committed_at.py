"""When each outbox event was committed, so the control plane can tell its replication lag.

Wall-clock unix seconds set at append; never hashed into anything. Events written before this
migration have none (NULL): the centre counts no lag for them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("committed_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("committed_at")
