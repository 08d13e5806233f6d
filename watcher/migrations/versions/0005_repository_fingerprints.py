"""repositories commit one at a time: a fingerprint of each repository's tags, and a revision that two
polls compare-and-set (rows from before are simply re-diffed once: their fingerprint is NULL)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("revision")
        batch.drop_column("fingerprint")
