"""`registries.revision` goes: it was written as 0 and never read (a poll's compare-and-set is on each
repository's revision, `repositories.revision`)

Downgrading puts it back as the release before had it (an integer, not null, no default), 0 on every row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.drop_column("revision")


def downgrade() -> None:
    with op.batch_alter_table("registries") as batch:  # the default fills the rows already there
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("registries") as batch:
        batch.alter_column("revision", existing_type=sa.Integer(), existing_nullable=False, server_default=None)
