"""Timings and reuse: when a run was submitted and finished, how long a stage ran and what it
reused inside, when a worker's process started.

They feed run_summary.json, cost events and the restart check; none is hashed into anything.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("submitted_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("finished_at", sa.Float, nullable=True))
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("cache_hits", sa.Integer, nullable=True))
        batch.add_column(sa.Column("cache_misses", sa.Integer, nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("started_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("started_at")
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("cache_misses")
        batch.drop_column("cache_hits")
        batch.drop_column("seconds")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("finished_at")
        batch.drop_column("submitted_at")
