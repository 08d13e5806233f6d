"""images: what each digest is (kind, platforms, creation time, size, a few OCI annotations), once per
installation

Keyed by the digest alone, not by registry or workspace: the rows are read from bytes verified against the
digest, so they are the same whoever served them, and a digest already stored costs no request.
Downgrading drops the table (it is a cache of what registries serve: it is fetched again).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("digest", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("platforms", sa.JSON(), nullable=False),
        sa.Column("created", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("fetched_at", watcher.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("images")
