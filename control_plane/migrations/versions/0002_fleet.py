"""The fleet: replication state per site, and the replicated runs, stages, workers, queues, site host
marks, artifacts and costs; hosts as their agents report them, their bounded history, and refused pushes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _replicated() -> list[sa.Column[Any]]:
    return [sa.Column("replicated_seq", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False)]


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("site_head", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("applied_total", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("newest_committed_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("lag_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("events_per_s", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("rate_at", sa.Float, nullable=True))
    op.create_table(
        "runs",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("project_path", sa.Text, nullable=False),
        sa.Column("project_hash", sa.String(64), nullable=False),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("episode", sa.Text, nullable=True),
        sa.Column("submitted_seq", sa.Integer, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        *_replicated(),
    )
    op.create_index("ix_runs_submitted", "runs", ["submitted_at", "site_id", "run_id"])
    op.create_index("ix_runs_tenant_submitted", "runs", ["tenant_id", "submitted_at", "site_id", "run_id"])
    op.create_index("ix_runs_status_submitted", "runs", ["status", "submitted_at"])
    op.create_index("ix_runs_site_submitted", "runs", ["site_id", "submitted_at"])
    op.create_index("ix_runs_project", "runs", ["project_hash"])
    op.create_table(
        "stages",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("stage_id", sa.String(128), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("depends_on", sa.JSON, nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("output", sa.String(64), nullable=True),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("cache_hits", sa.Integer, nullable=True),
        sa.Column("cache_misses", sa.Integer, nullable=True),
        *_replicated(),
    )
    op.create_index("ix_stages_status", "stages", ["status"])
    op.create_index("ix_stages_tenant", "stages", ["tenant_id"])
    op.create_table(
        "workers",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queues", sa.JSON, nullable=False),
        sa.Column("current_job", sa.String(160), nullable=True),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        *_replicated(),
    )
    op.create_index("ix_workers_host", "workers", ["site_id", "host"])
    op.create_index("ix_workers_status", "workers", ["status"])
    op.create_table(
        "queues",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        *_replicated(),
    )
    op.create_table(
        "site_hosts",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        *_replicated(),
    )
    op.create_table(
        "artifacts",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.String(32), nullable=True),
        sa.Column("parents", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("compute_origin", sa.String(16), nullable=False),
        sa.Column("license", sa.JSON, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        *_replicated(),
    )
    op.create_index("ix_artifacts_kind", "artifacts", ["kind"])
    op.create_table(
        "costs",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("stage_id", sa.String(128), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("compute_seconds", sa.Float, nullable=True),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("committed_at", sa.Float, nullable=True),
        *_replicated(),
    )
    op.create_index("ix_costs_tenant_committed", "costs", ["tenant_id", "committed_at"])
    op.create_table(
        "hosts",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("agent_address", sa.String(255), nullable=False),
        sa.Column("agent_tls", sa.Boolean, nullable=False),
        sa.Column("interval_s", sa.Float, nullable=False),
        sa.Column("reported_state", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_report_at", sa.Float, nullable=False),
        sa.Column("sampled_at", sa.Float, nullable=False),
        sa.Column("load_1m", sa.Float, nullable=False),
        sa.Column("load_5m", sa.Float, nullable=False),
        sa.Column("cpu_count", sa.Integer, nullable=False),
        sa.Column("memory_used_bytes", sa.BigInteger, nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger, nullable=False),
        sa.Column("disks", sa.JSON, nullable=False),
        sa.Column("temperatures", sa.JSON, nullable=False),
        sa.Column("workers", sa.JSON, nullable=False),
        sa.Column("trusted_key_ids", sa.JSON, nullable=False),
        sa.Column("trust_bundle_version", sa.BigInteger, nullable=False),
        sa.Column("trust_problem", sa.Text, nullable=False),
        sa.Column("pruned_at", sa.Float, nullable=False),
    )
    op.create_index("ix_hosts_last_report", "hosts", ["last_report_at"])
    op.create_table(
        "host_samples",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("load_1m", sa.Float, nullable=False),
        sa.Column("memory_used_bytes", sa.BigInteger, nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger, nullable=False),
        sa.Column("disk_used_fraction", sa.Float, nullable=False),
        sa.Column("workers_busy", sa.Integer, nullable=False),
    )
    op.create_index("ix_host_samples_host_time", "host_samples", ["site_id", "host", "received_at"])


def downgrade() -> None:
    for table in ("host_samples", "hosts", "costs", "artifacts", "site_hosts", "queues", "workers",
                  "stages", "runs"):
        op.drop_table(table)
    with op.batch_alter_table("sites") as batch:
        for column in ("rate_at", "events_per_s", "lag_s", "newest_committed_at", "applied_total", "site_head",
                       "token_hash"):
            batch.drop_column(column)
