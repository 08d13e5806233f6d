"""indexes for the event history's filters: a page filtered by registry, repository or tag reads its own
rows newest first instead of scanning the history (benchmarks/read_side.py, 1,000,000 events)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: (name, columns): each filter column, then the history id the pages are ordered and keyset-paged by
INDEXES = (
    ("ix_events_registry_id", ["registry", "id"]),
    ("ix_events_repository_id", ["repository", "id"]),
    ("ix_events_tag_id", ["tag", "id"]),
)


def upgrade() -> None:
    for name, columns in INDEXES:
        op.create_index(name, "events", columns, unique=False)


def downgrade() -> None:
    for name, _ in reversed(INDEXES):
        op.drop_index(name, table_name="events")
