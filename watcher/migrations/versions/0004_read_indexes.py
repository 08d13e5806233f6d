"""indexes for the event history's filters: a page filtered by registry, repository or tag reads its own
rows newest first instead of scanning the history (benchmarks/read_side.py, 1,000,000 events); and a
registry's newest poll runs found by walking back from its newest id, however long the history

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: (name, table, columns): each filter column, then the id the pages are ordered and keyset-paged by
INDEXES = (
    ("ix_events_registry_id", "events", ["registry", "id"]),
    ("ix_events_repository_id", "events", ["repository", "id"]),
    ("ix_events_tag_id", "events", ["tag", "id"]),
    ("ix_poll_runs_registry_id_id", "poll_runs", ["registry_id", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
