"""A database at migration N: the one way tests move a schema up or down to a revision of theirs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from watcher.db import alembic_config, foreign_keys_off


class Migrations:
    """Moves one connection's schema to a revision, up or down, inside that connection's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.config = alembic_config(conn.engine.url.render_as_string(hide_password=False))
        self.config.attributes["connection"] = conn

    def up(self, revision: str) -> None:
        from alembic import command

        command.upgrade(self.config, revision)

    def down(self, revision: str) -> None:
        from alembic import command

        command.downgrade(self.config, revision)

    def before(self, revision: str) -> str:
        """The revision `revision` follows."""
        from alembic.script import ScriptDirectory

        down = ScriptDirectory.from_config(self.config).get_revision(revision).down_revision
        assert isinstance(down, str)
        return down


@contextmanager
def migrations(engine: Engine) -> Iterator[Migrations]:
    """`engine`'s schema, to be moved to the revisions a test needs, in one transaction (SQLite's foreign
    keys off, as `watcher.db.migrate` runs them)."""
    with engine.connect() as conn, foreign_keys_off(conn), conn.begin():
        yield Migrations(conn)
