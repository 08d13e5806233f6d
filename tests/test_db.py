"""The state database: processes starting together on a new database all find the schema at head."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import PG_ADMIN_URL, RUN_ID
from tests.support.migrations import migrations
from watcher.db import HEAD_REVISION, get_engine, head_revision, migrate, stored_revisions
from watcher.runtime.private_files import file_lock

PROCESSES = 6

# Each process imports first, says so, then opens the database when a line on stdin says go: all at once.
OPEN_AT = """
import sys
from watcher.db import get_engine
print("ready", flush=True)
sys.stdin.readline()
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
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:  # every process has imported (however long that takes on a loaded machine)...
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.communicate()[1]
    for proc in procs:  # ...before any opens the database
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
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
            assert stored_revisions(conn) == ["0010"]
    finally:
        engine.dispose()


#: registry `prod` (id 1) and its repository `app` (id 1, revision 3), as a database of 0010 on holds them
PROD_APP = [
    "INSERT INTO registries (id, name, provider, url, credentials, options, interval_seconds, emit_existing, "
    "baselined, next_poll_at, created_at) VALUES (1, 'prod', 'oci', 'https://r1', '', '{}', 300, false, true, "
    "'2026-12-06 10:00:00', '2026-12-06 10:00:00')",
    "INSERT INTO repositories (id, registry_id, name, first_seen_at, revision) VALUES (1, 1, 'app', "
    "'2026-12-06 10:00:00', 3)",
]


def migrated_with(engine: Engine, url: str, revision: str, rows: list[str]) -> None:
    """`rows` written at `revision`, then the database migrated the way a process opens it (`migrate`)."""
    with migrations(engine) as schema:
        schema.up(revision)
        for row in rows:
            schema.conn.execute(text(row))
    migrate(engine, url)


def test_migration_0011_puts_everything_in_the_default_workspace_and_keeps_every_row(new_database: str) -> None:
    """A database at 0010 with a registry, its snapshot, an event and tokens is migrated the way a process
    opens it (`migrate`, SQLite's foreign keys on): nothing is lost — a batch copy of `registries` once
    cascaded to its snapshot — everything is in workspace `default`, the first start's `admin` token is an
    operator; names are unique per workspace; down and up again; the tables then match the models."""
    from alembic.autogenerate import compare_metadata

    from watcher.db import _make_engine
    from watcher.models import Base

    engine = _make_engine(new_database)
    rows = [
        *PROD_APP,
        "INSERT INTO tags (id, repository_id, name, digest) VALUES (1, 1, 'v1', 'sha256:" + "a" * 64 + "')",
        "INSERT INTO events (id, event_id, registry_id, registry, repository, tag, change, digest, previous_digest, "
        "detected_at, cloudevent) VALUES (1, 'e1', 1, 'prod', 'app', 'v1', 'added', 'sha256:" + "a" * 64 + "', '', "
        "'2026-12-06 10:00:00', '{}')",
        "INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES (1, 'admin', 'admin', 'h1', "
        "'2026-12-06 10:00:00'), (2, 'ci', 'admin', 'h2', '2026-12-06 10:00:00')",
    ]

    def snapshot(conn: Connection) -> list[object]:
        return [
            conn.execute(
                text(
                    "SELECT r.name, p.name, p.revision, t.name FROM registries r JOIN repositories p "
                    "ON p.registry_id = r.id JOIN tags t ON t.repository_id = p.id"
                )
            ).all(),
            conn.execute(text("SELECT event_id, registry_id FROM events")).all(),
        ]

    try:
        migrated_with(engine, new_database, "0010", rows)
        with engine.begin() as conn:
            assert stored_revisions(conn) == [HEAD_REVISION]
            assert snapshot(conn) == [[("prod", "app", 3, "v1")], [("e1", 1)]]
            assert conn.execute(text("SELECT id, name FROM workspaces")).all() == [(1, "default")]
            for table in ("registries", "events", "api_tokens"):
                assert conn.execute(text(f"SELECT DISTINCT workspace_id FROM {table}")).scalars().all() == [1]
            roles = conn.execute(text("SELECT name, role FROM api_tokens ORDER BY id")).all()
            assert roles == [("admin", "operator"), ("ci", "admin")]
            conn.execute(text("INSERT INTO workspaces (name, created_at) VALUES ('team-b', '2026-12-06 10:00:00')"))
            team_b = conn.execute(text("SELECT id FROM workspaces WHERE name = 'team-b'")).scalar_one()
            assert team_b != 1
            conn.execute(
                text(rows[0].replace("(id, ", "(workspace_id, id, ").replace("(1, 'prod'", f"({team_b}, 2, 'prod'"))
            )
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(text(rows[0].replace("(1, 'prod'", "(3, 'prod'")))
            conn.execute(text(f"DELETE FROM registries WHERE workspace_id = {team_b}"))
            conn.execute(text(f"DELETE FROM workspaces WHERE id = {team_b}"))
        with migrations(engine) as schema:
            schema.down("0010")
            assert snapshot(schema.conn) == [[("prod", "app", 3, "v1")], [("e1", 1)]]
            schema.up(HEAD_REVISION)  # the models are the head's
            assert snapshot(schema.conn) == [[("prod", "app", 3, "v1")], [("e1", 1)]]
            differences = compare_metadata(MigrationContext.configure(schema.conn), Base.metadata)
            # the partial index is the migrations' alone (test_the_migrations_make_the_partial_index_...)
            assert [d for d in differences if d[:1] != ("remove_index",)] == []
    finally:
        engine.dispose()


def test_migration_0012_adds_images_keyed_by_digest_and_keeps_every_row(new_database: str) -> None:
    """A database at 0011 with a registry and its snapshot is migrated the way a process opens it: nothing is
    lost, `images` is there and takes one row per digest (a second is refused, whoever would write it);
    down drops it and keeps the snapshot, up gives it back; the tables then match the models."""
    from alembic.autogenerate import compare_metadata

    from watcher.db import _make_engine
    from watcher.models import Base

    engine = _make_engine(new_database)
    digest = "sha256:" + "b" * 64
    rows = [
        *PROD_APP,
        f"INSERT INTO tags (id, repository_id, name, digest) VALUES (1, 1, 'v1', '{digest}')",
    ]
    image = (
        "INSERT INTO images (digest, kind, platforms, created, size, annotations, fetched_at) VALUES "
        f'(\'{digest}\', \'image\', \'[{{"os": "linux", "architecture": "amd64", "variant": null}}]\', '
        "'2026-12-01 09:00:00', 5000000000, '{\"org.opencontainers.image.revision\": \"abc\"}', "
        "'2026-12-06 10:00:00')"
    )
    snapshot = (
        "SELECT r.name, p.name, p.revision, t.name, t.digest FROM registries r JOIN repositories p "
        "ON p.registry_id = r.id JOIN tags t ON t.repository_id = p.id"
    )
    kept = [("prod", "app", 3, "v1", digest)]

    try:
        migrated_with(engine, new_database, "0011", rows)
        with engine.begin() as conn:
            assert stored_revisions(conn) == [HEAD_REVISION]
            assert conn.execute(text(snapshot)).all() == kept
            conn.execute(text(image))
            size = conn.execute(text("SELECT size FROM images")).scalar_one()
            assert size == 5_000_000_000  # past 32 bits: a multi-gigabyte image
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(text(image))
        with migrations(engine) as schema:
            schema.down("0011")
            assert "images" not in inspect(schema.conn).get_table_names()
            assert schema.conn.execute(text(snapshot)).all() == kept
            schema.up(HEAD_REVISION)  # the models are the head's
            assert schema.conn.execute(text("SELECT count(*) FROM images")).scalar() == 0
            differences = compare_metadata(MigrationContext.configure(schema.conn), Base.metadata)
            # the partial index is the migrations' alone (test_the_migrations_make_the_partial_index_...)
            assert [d for d in differences if d[:1] != ("remove_index",)] == []
    finally:
        engine.dispose()
