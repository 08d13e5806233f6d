"""The state database: processes starting together on a new database all find the schema at head."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from tests.conftest import PG_ADMIN_URL, RUN_ID
from tests.support.migrations import migrations
from watcher.db import HEAD_REVISION, get_engine, head_revision, migrate, stored_revisions
from watcher.runtime.private_files import file_lock

PROCESSES = 6

# Each process imports first, then opens the database at the same agreed moment.
OPEN_AT = """
import sys, time
start = float(sys.argv[1])
from watcher.db import get_engine
time.sleep(max(0.0, start - time.time()))
get_engine()
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database no process has opened yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'new.db'}"
        return
    name = f"watcher_test_{RUN_ID}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_revision(url: str) -> tuple[str | None, set[str]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision(), set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_processes_starting_together_on_a_new_database(new_database: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env |= {"WATCHER_DATABASE_URL": new_database, "WATCHER_DATA_DIR": str(tmp_path / "data")}
    start = time.time() + 4  # time enough for every process to import first
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = [(proc.wait(120), proc.communicate()[1]) for proc in procs]
    assert [code for code, _ in results] == [0] * PROCESSES, results
    revision, tables = schema_revision(new_database)
    assert revision == head_revision()
    assert {"registries", "repositories", "tags", "events", "poll_runs"} <= tables


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_current_schema_is_opened_without_the_migration_lock(db: str, watcher: object, tmp_path: Path) -> None:
    """Starting a process on a current database neither takes nor waits for the lock a migration holds."""
    from watcher.settings import get_settings

    url = get_settings().effective_database_url
    engine = get_engine()  # migrated now
    done = threading.Event()

    def open_again() -> None:
        migrate(engine, url)
        done.set()

    with ExitStack() as held:  # what a migrating process holds
        if db == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            held.enter_context(file_lock(path.with_name(path.name + ".lock")))
        else:
            held.enter_context(psycopg.connect(url, autocommit=True)).execute("SELECT pg_advisory_lock(7365123)")
        threading.Thread(target=open_again, daemon=True).start()
        assert done.wait(20), "a process opening a current schema waited for the migration lock"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()


def test_the_head_constant_is_alembics_head() -> None:
    """`HEAD_REVISION` lets a process find the schema current without importing Alembic: it must be the
    migrations' head (bump it with every new migration)."""
    assert head_revision() == HEAD_REVISION


def test_a_database_behind_head_is_migrated_on_open(tmp_path: Path) -> None:
    """A database a release behind (its version table exists, with an older revision) is upgraded."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    try:
        with migrations(engine) as schema:
            schema.up("0002")
        with engine.connect() as conn:
            assert stored_revisions(conn) == ["0002"]
        opened = get_engine(url)
        try:
            with opened.connect() as conn:
                assert stored_revisions(conn) == [HEAD_REVISION]
                assert {"api_tokens", "counters"} <= set(inspect(conn).get_table_names())  # 0003's tables
        finally:
            opened.dispose()
            get_engine.cache_clear()
    finally:
        engine.dispose()


def test_the_migrations_make_the_partial_index_of_registry_wide_runs(new_database: str) -> None:
    """`ix_poll_runs_registry_whole_id` is the migrations' alone (the models leave it out, so that SQLite
    processes never load the PostgreSQL dialect): it is there, partial, on both databases."""
    engine = get_engine(new_database)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                found = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
            else:
                found = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
            definition = conn.execute(text(found), {"name": "ix_poll_runs_registry_whole_id"}).scalar_one()
    finally:
        engine.dispose()
    assert "registry_id" in definition
    assert "listed_repositories IS NULL" in definition.replace("(", "").replace(")", "")


def test_migration_0010_drops_the_registries_revision_and_gives_it_back(new_database: str) -> None:
    """`registries.revision` (written as 0, never read) is dropped with the rows kept; downgrading gives the
    column back as 0009 had it, 0 on every row; up, down and up again; the tables then match the models."""
    from alembic.autogenerate import compare_metadata

    from watcher.models import Base

    if new_database.startswith("sqlite:///"):
        Path(new_database.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_engine(new_database.replace("postgresql://", "postgresql+psycopg://"))
    registry = (
        "INSERT INTO registries (id, name, provider, url, credentials, options, interval_seconds, emit_existing, "
        "baselined, {revision}next_poll_at, created_at) VALUES (1, 'r1', 'oci', 'https://r1', '', '{{}}', 300, "
        "false, true, {value}'2026-12-06 10:00:00', '2026-12-06 10:00:00')"
    )

    def columns(conn: Connection) -> dict[str, tuple[str, bool, object]]:
        found = inspect(conn).get_columns("registries")
        return {c["name"]: (str(c["type"]), c["nullable"], c.get("default")) for c in found}

    try:
        with migrations(engine) as schema:
            conn = schema.conn
            schema.up("0009")
            conn.execute(text(registry.format(revision="revision, ", value="7, ")))
            as_0009 = columns(conn)
            schema.up("0010")
            assert "revision" not in columns(conn)
            assert conn.execute(text("SELECT name, baselined FROM registries")).all() == [("r1", True)]
            schema.down("0009")
            assert columns(conn) == as_0009
            assert conn.execute(text("SELECT name, revision FROM registries")).all() == [("r1", 0)]
            schema.up("0010")
            conn.execute(text(registry.format(revision="", value="").replace("(1, 'r1'", "(2, 'r2'")))
            assert conn.execute(text("SELECT name FROM registries ORDER BY id")).scalars().all() == ["r1", "r2"]
            assert stored_revisions(conn) == [HEAD_REVISION]
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            # the partial index is the migrations' alone (test_the_migrations_make_the_partial_index_...)
            assert [d for d in differences if d[:1] != ("remove_index",)] == []
    finally:
        engine.dispose()
