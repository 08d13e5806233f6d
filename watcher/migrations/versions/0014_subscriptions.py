"""subscriptions and deliveries: events delivered where pipelines listen (HTTP, chat, GitHub dispatch)

A subscription belongs to a workspace (its name is unique there): an endpoint URL, a wire format, filters,
and a secret (Fernet-encrypted like registry credentials) that signs or authorizes what is sent. A delivery
is one event for one subscription, written by the relay in the transaction that marks the event published
(so none is lost or written twice: unique per subscription and event), and tried in id order per
subscription until it is accepted or dead-lettered.

Downgrading drops both tables.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "workspace_id",
            sa.Integer(),
            sa.ForeignKey("workspaces.id", name="fk_subscriptions_workspace", ondelete="CASCADE"),
            nullable=False,
            server_default="1",
        ),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("format", sa.String(length=30), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("last_delivered_at", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("last_failed_at", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_subscriptions_workspace_name"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "subscription_id",
            sa.Integer(),
            sa.ForeignKey("subscriptions.id", name="fk_deliveries_subscription", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "event_id",
            sa.Integer(),
            sa.ForeignKey("events.id", name="fk_deliveries_event", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_subscription_event"),
    )
    op.create_index("ix_deliveries_subscription_state_id", "deliveries", ["subscription_id", "state", "id"])
    op.create_index("ix_deliveries_state_next_attempt", "deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_state_next_attempt", table_name="deliveries")
    op.drop_index("ix_deliveries_subscription_state_id", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("subscriptions")
