"""digests wide enough for every valid digest; poll runs count the names a registry sent that were ignored

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DIGEST = sa.String(length=255)
OLD_DIGEST = sa.String(length=100)


def upgrade() -> None:
    with op.batch_alter_table("tags") as batch:
        batch.alter_column("digest", type_=DIGEST, existing_type=OLD_DIGEST, existing_nullable=False)
    with op.batch_alter_table("events") as batch:
        batch.alter_column("digest", type_=DIGEST, existing_type=OLD_DIGEST, existing_nullable=False)
        batch.alter_column("previous_digest", type_=DIGEST, existing_type=OLD_DIGEST, existing_nullable=False)
    with op.batch_alter_table("poll_runs") as batch:
        batch.add_column(sa.Column("ignored", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("poll_runs") as batch:
        batch.drop_column("ignored")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("previous_digest", type_=OLD_DIGEST, existing_type=DIGEST, existing_nullable=False)
        batch.alter_column("digest", type_=OLD_DIGEST, existing_type=DIGEST, existing_nullable=False)
    with op.batch_alter_table("tags") as batch:
        batch.alter_column("digest", type_=OLD_DIGEST, existing_type=DIGEST, existing_nullable=False)
