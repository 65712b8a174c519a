"""Cost days (one row per run and UTC day, kept at ingest) backfilled from the costs; dashboard indexes.

Revision ID: 0007_cost_rollup
Revises: 0006_alerts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_cost_rollup"
down_revision = "0006_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cost_days",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("compute_s", sa.Float, nullable=False),
        sa.Column("usd", sa.Float, nullable=False),
    )
    op.create_index("ix_cost_days_day_tenant", "cost_days", ["day", "tenant_id"])
    # The same sums the ingest writes (control_plane.ingest.roll_up_costs), spelled here so that
    # this revision keeps meaning what it meant when the code changes.
    days = "CAST(committed_at / 86400 AS INTEGER)" if op.get_bind().dialect.name == "sqlite" else \
        "CAST(floor(committed_at / 86400) AS INTEGER)"
    op.execute(f"INSERT INTO cost_days (site_id, run_id, day, tenant_id, attempts, compute_s, usd) "
               f"SELECT site_id, run_id, {days}, min(tenant_id), count(*), coalesce(sum(compute_seconds), 0.0), "
               f"coalesce(sum(usd), 0.0) FROM costs WHERE committed_at IS NOT NULL "
               f"GROUP BY site_id, run_id, {days}")
    op.create_index("ix_stages_status_site_queue", "stages", ["status", "site_id", "queue"])
    op.create_index("ix_runs_site_project", "runs", ["site_id", "project_path", "submitted_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_site_project", table_name="runs")
    op.drop_index("ix_stages_status_site_queue", table_name="stages")
    op.drop_table("cost_days")
