"""policies: which image of a repository to deploy, each with its current selection; selection events

A policy belongs to a workspace (its name is unique there) and watches one repository of one of the
workspace's registries: it goes with the registry. Its current selection (tag, digest, since when, how many
tags were considered and ignored) is stored on its row, so that a poll that changes the repository compares
with it in the same transaction and writes a `selected` event only when it changed. Events gain `policy`
and `previous_tag` (empty for tag events), and an index for a policy's selection history.

Downgrading drops the table, the columns and the index, and the `selected` events with them (an older
version could not publish them).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "workspace_id",
            sa.Integer(),
            sa.ForeignKey("workspaces.id", name="fk_policies_workspace", ondelete="CASCADE"),
            nullable=False,
            server_default="1",
        ),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "registry_id",
            sa.Integer(),
            sa.ForeignKey("registries.id", name="fk_policies_registry", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("repository", sa.String(length=500), nullable=False),
        sa.Column("strategy", sa.String(length=20), nullable=False),
        sa.Column("argument", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("filter", sa.Text(), nullable=False, server_default=""),
        sa.Column("extract", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("prerelease", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("selected_tag", sa.String(length=200), nullable=True),
        sa.Column("selected_digest", sa.String(length=255), nullable=True),
        sa.Column("selected_at", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("considered", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("ignored", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("evaluated_at", watcher.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_policies_workspace_name"),
    )
    op.create_index("ix_policies_registry_repository", "policies", ["registry_id", "repository"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("policy", sa.String(length=63), nullable=True))
        batch.add_column(sa.Column("previous_tag", sa.String(length=200), nullable=False, server_default=""))
    op.create_index("ix_events_workspace_policy_id", "events", ["workspace_id", "policy", "id"])


def downgrade() -> None:
    op.execute("DELETE FROM events WHERE policy IS NOT NULL")
    op.drop_index("ix_events_workspace_policy_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("previous_tag")
        batch.drop_column("policy")
    op.drop_index("ix_policies_registry_repository", table_name="policies")
    op.drop_table("policies")
