"""A throw-away watcher state for a benchmark: a temporary dir, a database of its own and a unique Redis
stream key, all removed afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_ADMIN_URL = os.environ.get("WATCHER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WATCHER_BENCH_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class State:
    tmp: Path
    url: str
    stream: str
    #: the WATCHER_* variables that point an installation at it
    env: dict[str, str]


@contextlib.contextmanager
def state(db: str, prefix: str) -> Iterator[State]:
    """SQLite in the temporary dir, or a PostgreSQL database created for the run (WATCHER_BENCH_PG) and
    dropped after; the stream's keys are deleted from Redis (WATCHER_BENCH_REDIS)."""
    import psycopg
    import redis

    tmp = Path(tempfile.mkdtemp(prefix=f"watcher-{prefix}-"))
    run = secrets.token_hex(4)
    pg_name = f"watcher_{prefix.replace('-', '_')}_{run}"
    if db == "postgresql":
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"
    else:
        url = f"sqlite:///{tmp / 'watcher.db'}"
    stream = f"watcher-bench:{run}:events"
    env = {
        "WATCHER_DATA_DIR": str(tmp / "data"),
        "WATCHER_DATABASE_URL": url,
        "WATCHER_REDIS_URL": REDIS_URL,
        "WATCHER_EVENTS_STREAM": stream,
        "WATCHER_SECRET_KEY": secrets.token_urlsafe(24),
    }
    try:
        yield State(tmp, url, stream, env)
    finally:
        if db == "postgresql":
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{stream}*"):
                client.delete(key)
        shutil.rmtree(tmp, ignore_errors=True)
