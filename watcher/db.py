"""Database engine and sessions; the schema is owned by Alembic migrations, applied on first use.

Processes starting together on a new database migrate one at a time (PostgreSQL: an advisory lock;
SQLite: a file lock beside the database), and a process finding the schema current takes no lock at all.
"Current" is one cheap read of Alembic's version table compared with `HEAD_REVISION`, so a command on a
current database never imports Alembic (a test keeps the constant equal to the migrations' head).
A SQLite database is created 0600 before SQLite opens it, so its -wal and -shm files, which SQLite gives
the database's mode, are private too. SQLAlchemy is imported where it is used (`--help` needs none).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.errors import StateError
from watcher.runtime.private_files import file_lock, narrow, private_dir, touch_private
from watcher.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).parent / "migrations"
#: the newest migration's revision: bump it with every new migration (tests/test_db.py checks it)
HEAD_REVISION = "0015"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The head of the migrations directory, as Alembic finds it (slow: imports Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database, an in-memory one or a `file:` URI."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return None if parsed.database.startswith("file:") else Path(parsed.database)


def create_sqlite_file(path: Path) -> None:
    """The database file, 0600; a directory made for it is 0700, and so is the data dir (narrowed if wider)."""
    if not path.parent.exists() or path.parent.resolve() == Path(get_settings().data_dir).resolve():
        private_dir(path.parent)
    touch_private(path)
    for companion in ("-wal", "-shm"):  # left by an older version, perhaps wider
        narrow(path.with_name(path.name + companion))


def _make_engine(url: str) -> Engine:
    engine = _new_engine(url)
    _made.add(engine)
    return engine


#: every engine this process made, for `dispose_engines`
_made: weakref.WeakSet[Engine] = weakref.WeakSet()


def dispose_engines() -> None:
    """Close the pooled connections of every engine made here (a process about to end: PostgreSQL is told
    goodbye instead of logging a dropped connection)."""
    for engine in list(_made):
        engine.dispose()


def _new_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            create_sqlite_file(path)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI read while a worker writes; foreign keys make deletes cascade.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL waits for other processes
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process, migrated to the newest schema before first use."""
    from sqlalchemy.exc import OperationalError

    url = url or get_settings().effective_database_url
    engine = _make_engine(url)
    try:
        migrate(engine, url)
    except OperationalError as exc:
        raise StateError(f"cannot open the state database: {exc.orig}") from None
    return engine


def migrate(engine: Engine, url: str) -> None:
    """Bring the schema to the newest revision; one process at a time, and only when it is behind."""
    from sqlalchemy import text

    with engine.connect() as conn:
        if stored_revisions(conn) == [HEAD_REVISION]:
            return  # the common case: one small read, no lock, no Alembic
    from alembic import command

    with _migration_lock(url), engine.connect() as conn, foreign_keys_off(conn), conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7365123)"))
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")  # from wherever the process before us left it: often a no-op
        _check_foreign_keys(conn)


@contextmanager
def foreign_keys_off(conn: Connection) -> Iterator[None]:
    """SQLite's foreign keys off while the migrations run: a batch migration copies a table and drops the
    old one, and with foreign keys on that drop deletes every row that refers to it (a registry's snapshot:
    the next poll would report every tag `added`). They are turned back on before the connection returns
    to the pool. The pragma is ignored inside a transaction, so it runs before the migrations' one."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()
    try:
        yield
    finally:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()


def _check_foreign_keys(conn: Connection) -> None:
    """A migration that left a row pointing at nothing fails, and its transaction is rolled back."""
    if conn.dialect.name == "sqlite" and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
        raise StateError("a migration left rows that refer to missing rows; the database was not changed")


def stored_revisions(conn: Connection) -> list[str]:
    """The revisions in Alembic's version table; none for a new database (no table yet)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except DBAPIError:  # no such table: a new database; any other failure recurs, reported, below
        conn.rollback()
        return []


def _migration_lock(url: str) -> AbstractContextManager[None]:
    path = sqlite_file(url)
    return nullcontext() if path is None else file_lock(path.with_name(path.name + ".lock"))


@contextmanager
def read_scope(engine: Engine | None = None) -> Iterator[Connection]:
    """A Core connection for reading (`watcher.read.model`), its one transaction rolled back at the end:
    no ORM session, so a reading command never imports `sqlalchemy.orm`."""
    with (engine or get_engine()).connect() as connection:
        yield connection


@contextmanager
def session_scope(engine: Engine | None = None, *, bookkeeping: bool = False) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error.

    `bookkeeping`: the transaction writes only what a crash of the database server may lose without harm
    (a tick's claims, a steady poll's lease, run and counters: lost, the registry is due again and the run
    reads as abandoned), so on PostgreSQL its commit does not wait for the WAL to reach the disk
    (`synchronous_commit = off` for it alone; the WAL writer flushes it within a fraction of a second, and
    any later durable commit flushes it first). The flush was most of what such a commit cost the server.
    It stays atomic, and every other session sees it at once; a snapshot's or an event's commit never is
    one."""
    from sqlalchemy.orm import sessionmaker

    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        if bookkeeping:
            _no_flush_wait(session.connection())
        yield session


@contextmanager
def write_scope(engine: Engine | None = None, *, bookkeeping: bool = False) -> Iterator[Connection]:
    """`session_scope` as a Core connection: one transaction, committed on success, rolled back on any
    error, and no ORM imported (a poll's claim, before its first request: `watcher.polling.poll`).
    `bookkeeping` as in `session_scope`."""
    with (engine or get_engine()).begin() as connection:
        if bookkeeping:
            _no_flush_wait(connection)
        yield connection


def _no_flush_wait(connection: Connection) -> None:
    """This transaction's commit does not wait for the WAL flush (PostgreSQL; elsewhere nothing)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
