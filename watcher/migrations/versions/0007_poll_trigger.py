"""each poll run says what triggered it (`schedule`, `webhook` or `manual`) and, for a poll of some
repositories only (a webhook's), which ones it listed; a registry's newest registry-wide run (its health)
is found by walking back an index of those runs alone, however many repository polls came after it

Runs recorded before this revision were all registry-wide; whether each was scheduled or manual was not
kept, so they read as `schedule`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WHOLE = sa.text("listed_repositories IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("poll_runs") as batch:
        batch.add_column(sa.Column("trigger", sa.String(length=10), nullable=False, server_default="schedule"))
        batch.add_column(sa.Column("listed_repositories", sa.JSON(none_as_null=True), nullable=True))
    op.create_index(
        "ix_poll_runs_registry_whole_id",
        "poll_runs",
        ["registry_id", "id"],
        unique=False,
        postgresql_where=WHOLE,
        sqlite_where=WHOLE,
    )


def downgrade() -> None:
    op.drop_index("ix_poll_runs_registry_whole_id", table_name="poll_runs")
    with op.batch_alter_table("poll_runs") as batch:
        batch.drop_column("listed_repositories")
        batch.drop_column("trigger")
