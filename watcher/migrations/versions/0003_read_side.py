"""the read side: API tokens (stored as hashes), deployment-wide counters for metrics, and when a
dispatched poll became due (the schedule lag)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", watcher.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "counters",
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.String(length=500), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("metric", "labels"),
    )
    with op.batch_alter_table("registries") as batch:
        batch.add_column(sa.Column("due_since", watcher.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.drop_column("due_since")
    op.drop_table("counters")
    op.drop_table("api_tokens")
