"""workspaces: every registry, event and token belongs to one; what existed goes to workspace `default`

Registry and token names become unique within their workspace. The history's per-filter indexes lead with
the workspace, so a team's page of events is still one index walk. The token the embedded defaults wrote
on their first start (`admin`, role admin) becomes an operator, as a first start now makes it.

Downgrading is refused once a second workspace exists (its registries' names could clash in one namespace);
otherwise it drops the columns and puts the old constraints and indexes back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import watcher.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: names SQLite's unnamed unique constraints get in a batch copy, so that they can be dropped by name
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
OLD_EVENT_INDEXES = {
    "ix_events_registry_id": "registry",
    "ix_events_repository_id": "repository",
    "ix_events_tag_id": "tag",
}
NEW_EVENT_INDEXES = {
    "ix_events_workspace_id": [],
    "ix_events_workspace_registry_id": ["registry"],
    "ix_events_workspace_repository_id": ["repository"],
    "ix_events_workspace_tag_id": ["tag"],
}


def _workspace_id(table: str) -> sa.Column:
    return sa.Column(
        "workspace_id",
        sa.Integer(),
        sa.ForeignKey("workspaces.id", name=f"fk_{table}_workspace", ondelete="CASCADE"),
        nullable=False,
        server_default="1",
    )


def _old_unique(table: str) -> str:
    """The name of `table`'s unique constraint on `name` as 0001/0003 made it."""
    return f"{table}_name_key" if op.get_bind().dialect.name == "postgresql" else f"uq_{table}_name"


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("max_registries", sa.Integer(), nullable=True),
        sa.Column("min_interval_seconds", sa.Integer(), nullable=True),
        sa.Column("max_concurrent_polls", sa.Integer(), nullable=True),
        sa.Column("created_at", watcher.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.execute("INSERT INTO workspaces (id, name, created_at) VALUES (1, 'default', CURRENT_TIMESTAMP)")
    if op.get_bind().dialect.name == "postgresql":  # the next workspace created must not take id 1 again
        op.execute("SELECT setval(pg_get_serial_sequence('workspaces', 'id'), 1)")
    for table in ("registries", "api_tokens"):
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.add_column(_workspace_id(table))
            batch.drop_constraint(_old_unique(table), type_="unique")
            batch.create_unique_constraint(f"uq_{table}_workspace_name", ["workspace_id", "name"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(_workspace_id("events"))
        for name in OLD_EVENT_INDEXES:
            batch.drop_index(name)
        for name, columns in NEW_EVENT_INDEXES.items():
            batch.create_index(name, ["workspace_id", *columns, "id"], unique=False)
    with op.batch_alter_table("console_sessions") as batch:
        batch.add_column(sa.Column("workspace_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_console_sessions_workspace", "workspaces", ["workspace_id"], ["id"], ondelete="SET NULL"
        )
    op.execute("UPDATE api_tokens SET role = 'operator' WHERE name = 'admin' AND role = 'admin'")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM workspaces WHERE id <> 1")).scalar():
        raise RuntimeError("cannot downgrade below 0011 while workspaces other than 'default' exist")
    op.execute("UPDATE api_tokens SET role = 'admin' WHERE role = 'operator'")
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_constraint("fk_console_sessions_workspace", type_="foreignkey")
        batch.drop_column("workspace_id")
    with op.batch_alter_table("events") as batch:
        for name in NEW_EVENT_INDEXES:
            batch.drop_index(name)
        for name, column in OLD_EVENT_INDEXES.items():
            batch.create_index(name, [column, "id"], unique=False)
        batch.drop_constraint("fk_events_workspace", type_="foreignkey")
        batch.drop_column("workspace_id")
    for table in ("registries", "api_tokens"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uq_{table}_workspace_name", type_="unique")
            batch.drop_constraint(f"fk_{table}_workspace", type_="foreignkey")
            batch.drop_column("workspace_id")
            batch.create_unique_constraint(_old_unique(table), ["name"])
    op.drop_table("workspaces")
