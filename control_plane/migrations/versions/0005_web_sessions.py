"""The dashboard's sign-in sessions: one row per signed-in browser, found by the sha256 of its cookie.

Only the digest of the session id is stored (the cookie's value), so reading the database does not
let anyone ride a session; the CSRF secret is per session. ``token_id`` ties the session to the API
token it was opened with: revoking that token (or disabling its user) ends the session. The stages
index serves the queues page's jobs per hour (the last hour's finished stages, as an index range).

Revision ID: 0005_web_sessions
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_web_sessions"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name"), nullable=False, index=True),
        sa.Column("token_id", sa.String(32), sa.ForeignKey("tokens.token_id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    op.create_index("ix_stages_status_updated", "stages", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_stages_status_updated", "stages")
    op.drop_table("web_sessions")
