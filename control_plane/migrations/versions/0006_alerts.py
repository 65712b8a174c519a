"""Alerts, their delivery outbox (notifications), every delivery attempt, and silences.

Revision ID: 0006_alerts
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_alerts"
down_revision = "0005_web_sessions"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("alert_type", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("stage", sa.String(128), nullable=True),
        sa.Column("host", sa.String(128), nullable=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("link", sa.String(512), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("occurrence", sa.String(128), nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("notified_at", sa.Float, nullable=True),
        sa.Column("escalation_step", sa.Integer, nullable=False),
        sa.Column("muted", sa.Text, nullable=False),
        sa.Column("acked_by", sa.String(128), nullable=True),
        sa.Column("acked_at", sa.Float, nullable=True),
        sa.Column("resolved_at", sa.Float, nullable=True),
    )
    op.create_index("ix_alerts_key", "alerts", ["key"])
    op.create_index("ix_alerts_status", "alerts", ["status"])
    op.create_index("ix_alerts_last_seen", "alerts", ["last_seen"])
    op.create_table(
        "alert_notifications",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.BigInteger, nullable=True),
        sa.Column("receiver", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("click_url", sa.Text, nullable=True),
        sa.Column("ack_url", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_alert_notifications_status", "alert_notifications", ["status"])
    op.create_index("ix_alert_notifications_alert", "alert_notifications", ["alert_id"])
    op.create_table(
        "alert_attempts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.BigInteger, nullable=False),
        sa.Column("alert_id", sa.BigInteger, nullable=True),
        sa.Column("receiver", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
    )
    op.create_index("ix_alert_attempts_notification", "alert_attempts", ["notification_id"])
    op.create_table(
        "alert_silences",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("matchers", sa.JSON, nullable=False),
        sa.Column("starts_at", sa.Float, nullable=False),
        sa.Column("ends_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("removed_by", sa.String(64), nullable=True),
        sa.Column("removed_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("alert_silences")
    op.drop_table("alert_attempts")
    op.drop_table("alert_notifications")
    op.drop_table("alerts")
