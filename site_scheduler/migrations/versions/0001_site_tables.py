"""Site tables: runs, stages, workers, queues, hosts and the outbox.

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
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("project_path", sa.Text, nullable=False),
        sa.Column("project_hash", sa.String(64), nullable=False),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("episode", sa.Text, nullable=True),
        sa.Column("submitted_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "stages",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("stage_id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("identity", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("depends_on", sa.JSON, nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("output", sa.String(64), nullable=True),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queues", sa.JSON, nullable=False),
        sa.Column("current_job", sa.String(160), nullable=True),
        sa.Column("since", sa.Float, nullable=False),
    )
    op.create_table(
        "queues",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
    )
    op.create_table(
        "hosts",
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("key", sa.JSON, nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("row", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("outbox", "hosts", "queues", "workers", "stages", "runs"):
        op.drop_table(table)
