"""console sessions are kept server-side: the cookie carries only a random id, whose SHA-256 is stored here
with the token it was opened with, so a logout, a revoked token or an idle session ends it at once

Sessions of the signed-cookie console (before this revision) carried the token itself and are not carried
over: everyone logs in once more.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", watcher.models.UTCDateTime(), nullable=False),
        sa.Column("notice", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_hash"),
    )
    op.create_index("ix_console_sessions_token_id", "console_sessions", ["token_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_console_sessions_token_id", table_name="console_sessions")
    op.drop_table("console_sessions")
