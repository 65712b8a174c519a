"""Pinned media builds: the ffmpeg and espeak-ng builds a site pins, and each worker's own.

A worker whose builds differ from the pinned ones takes no build-dependent stage and says why
(``workers.refused``); see ``site_scheduler.builds``.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pinned_builds",
        sa.Column("tool", sa.String(32), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("build", sa.Text, nullable=False),
        sa.Column("pinned_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("builds", sa.JSON, nullable=True))
        batch.add_column(sa.Column("refused", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("refused")
        batch.drop_column("builds")
    op.drop_table("pinned_builds")
