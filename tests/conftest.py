"""Shared fixtures: each test gets its own data dir, database, stream key and secret key.

Databases: SQLite in the test's tmp dir, or (the `db` fixture's `postgresql` param) a PostgreSQL database
of the test's own on the machine's server. Either starts at the newest schema, copied from a database this
test process migrated once (a SQLite file; a PostgreSQL TEMPLATE database): running the migrations for each
test cost more than half a second a test. Tests of the migrations themselves make their own new databases.
Redis: the machine's server at 127.0.0.1:6379 with a
key prefix unique to the run and test; tests that break Redis start their own server.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from watcher.cli.main import main
from watcher.db import get_engine
from watcher.registry import sharedlimits
from watcher.settings import Settings, get_settings

pytest_plugins = ["tests.support.fixtures", "tests.support.workers"]

RUN_ID = secrets.token_hex(4)
PG_ADMIN_URL = os.environ.get("WATCHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("WATCHER_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_DATABASE = f"watcher_test_{RUN_ID}"
PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0]


def _migrated(url: str) -> None:
    """`url`'s database brought to the newest schema, as a process opening it would, then left unused."""
    from watcher.db import _make_engine, migrate

    engine = _make_engine(url)
    try:
        migrate(engine, url)
    finally:
        engine.dispose()
        get_settings.cache_clear()  # read (for the data dir) while the SQLite file was made


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest schema, migrated once by this test process; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "watcher.db"
    _migrated(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database at the newest schema, migrated once by this test process, that each test's
    database is created from (`CREATE DATABASE ... TEMPLATE`); dropped at the end."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    try:
        _migrated(f"{PG_BASE}/{PG_DATABASE}")
        yield PG_DATABASE
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


class _Dropper:
    """Drops tests' PostgreSQL databases in a thread of its own: DROP DATABASE waits for a checkpoint,
    seconds on a busy server, and no test needs to wait for it. `close` waits for every drop."""

    def __init__(self) -> None:
        self.names: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, name="drop-test-databases", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (name := self.names.get()) is not None:
            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                self.failures.append(f"{name}: {exc}")

    def close(self) -> None:
        self.names.put(None)
        self.thread.join()
        assert not self.failures, self.failures


@pytest.fixture(scope="session")
def _postgres_dropper() -> Iterator[_Dropper]:
    dropper = _Dropper()
    yield dropper
    dropper.close()


@pytest.fixture
def postgres_url(postgres_template: str, _postgres_dropper: _Dropper) -> Iterator[str]:
    """A PostgreSQL database of this test's own, at the newest schema; dropped after the test (in the
    background). Copied file by file: PostgreSQL 15's default (`WAL_LOG`) writes every page of the template
    through the WAL, ~0.3 s of the server's CPU a test against ~0.07 s (measured side by side)."""
    name = f"{PG_DATABASE}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}" STRATEGY FILE_COPY')
    yield f"{PG_BASE}/{name}"
    _postgres_dropper.names.put(name)


@pytest.fixture(autouse=True)
def _fresh_redis_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis outage that one test causes (the shared limits then stand aside for 30 s, process-wide) is
    not carried into the next test this process runs: a test of the limits found its slots free of charge."""
    monkeypatch.setattr(sharedlimits, "OUTAGE", sharedlimits._Outage())


@pytest.fixture(scope="session", autouse=True)
def _redis_left_clean() -> Iterator[None]:
    """Whatever this run wrote to the machine's Redis (Celery queues of an app imported in another test's
    name too) is gone at the end: CI leaves the machine's servers as it found them."""
    yield
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"watcher-test:{RUN_ID}:*"):
        client.delete(key)


@dataclass
class Watcher:
    """One isolated watcher installation: its settings, database and Redis, and its CLI."""

    settings: Settings
    data_dir: Path
    redis: redis.Redis

    @property
    def engine(self) -> Engine:
        return get_engine()

    @property
    def stream(self) -> str:
        return self.settings.events_stream

    def cli(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    def add_registry(self, name: str, url: str, *extra: str, provider: str = "oci", input: str | None = None) -> Result:
        """`watcher registry add NAME --provider PROVIDER --url URL EXTRA...`; the caller checks the result."""
        return self.cli("registry", "add", name, "--provider", provider, "--url", url, *extra, input=input)

    def stream_entries(self) -> list[dict[str, str]]:
        entries: Any = self.redis.xrange(self.stream)
        return [fields for _, fields in entries]

    def env(self) -> dict[str, str]:
        """The environment a `watcher` subprocess needs to be this installation."""
        return {k: v for k, v in os.environ.items() if k.startswith("WATCHER_")} | {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        }


@pytest.fixture(params=["sqlite"])
def db(request: pytest.FixtureRequest) -> str:
    """The database kind; tests parametrize it with `@pytest.mark.parametrize("db", [...], indirect=True)`."""
    return str(request.param)


@pytest.fixture
def watcher(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Watcher]:
    data_dir = tmp_path / "data"
    stream = f"watcher-test:{RUN_ID}:{secrets.token_hex(4)}:events"
    monkeypatch.setenv("WATCHER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WATCHER_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("WATCHER_EVENTS_STREAM", stream)
    monkeypatch.setenv("WATCHER_SECRET_KEY", secrets.token_urlsafe(24))
    monkeypatch.setenv("WATCHER_MIN_INTERVAL_SECONDS", "1")  # tests poll every few seconds
    monkeypatch.setenv("WATCHER_LISTEN", "off")  # `watcher run` in a test serves HTTP only where it says so
    if db == "postgresql":
        monkeypatch.setenv("WATCHER_DATABASE_URL", request.getfixturevalue("postgres_url"))
    else:
        database = tmp_path / "watcher.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        database.chmod(0o600)
        monkeypatch.setenv("WATCHER_DATABASE_URL", f"sqlite:///{database}")
    get_settings.cache_clear()
    get_engine.cache_clear()
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield Watcher(get_settings(), data_dir, client)
    for key in client.scan_iter(f"{stream}*"):
        client.delete(key)
    get_engine().dispose()
    get_engine.cache_clear()
    get_settings.cache_clear()
