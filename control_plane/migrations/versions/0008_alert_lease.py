"""The alert emitter's lease: one ``alerts serve`` per fleet database sends; the others stand by.

Revision ID: 0008_alert_lease
Revises: 0006_alerts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_alert_lease"
down_revision = "0007_cost_rollup"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "alert_lease",
        sa.Column("name", sa.String(160), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    # The lease row exists from the start, expired: taking it is always an UPDATE, never a racing INSERT.
    op.bulk_insert(table, [{"name": "emitter", "holder": "", "host": "", "pid": 0, "acquired_at": 0.0,
                            "expires_at": 0.0}])


def downgrade() -> None:
    op.drop_table("alert_lease")
