"""listed_images: what a provider's own API says of the digests one registry lists

ECR's `describeImages`, ACR's manifest properties, Docker Hub's tag images and Google's `tags/list` say a
digest's kind, platforms, size or build time without a manifest being read. Those values are not verified
against the digest, so unlike `images` they are keyed by registry and digest and believed for that registry
alone. Downgrading drops the table (the next polls say it again).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "listed_images",
        sa.Column(
            "registry_id",
            sa.Integer(),
            sa.ForeignKey("registries.id", name="fk_listed_images_registry", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("digest", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=True),
        sa.Column("platforms", sa.JSON(), nullable=True),
        sa.Column("created", watcher.models.UTCDateTime(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("said_at", watcher.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("registry_id", "digest"),
    )


def downgrade() -> None:
    op.drop_table("listed_images")
