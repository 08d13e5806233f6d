"""registries can opt in to webhooks: the receiver's secret (encrypted), its format, whether it is on, and
when the last notification came

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_format", sa.String(length=30), nullable=True))
        batch.add_column(sa.Column("webhook_enabled", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("last_webhook_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registries") as batch:
        batch.drop_column("last_webhook_at")
        batch.drop_column("webhook_enabled")
        batch.drop_column("webhook_format")
        batch.drop_column("webhook_secret")
