"""The quick commands' read of the state: `status` and `registry list/show` from the default SQLite database
with the standard library's sqlite3 alone, because importing SQLAlchemy costs more than the 0.3 s these
commands may take on a small machine.

Only the common case is read here: the default database (no WATCHER_DATABASE_URL), already there, its
schema current. The queries are the read model's (`watcher.readmodel`), written out, and the answer is
built by the same code (`watcher.registryview`), so it is the same answer (tests/test_quickread.py
compares them). Anything else — PostgreSQL, a database to create or migrate, any error of the database
or a value it did not expect — goes to the read model, which answers (or fails) exactly as before.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from watcher.db import HEAD_REVISION, create_sqlite_file
from watcher.errors import NotFoundError
from watcher.registryview import RegistryStatus, build_details, build_statuses
from watcher.settings import get_settings

#: columns the ORM reads as aware UTC datetimes (stored as naive UTC text), as bools, as JSON
MOMENTS = frozenset(
    {"next_poll_at", "last_webhook_at", "lease_until", "due_since", "created_at", "started_at", "finished_at"}
)
FLAGS = frozenset({"emit_existing", "baselined", "webhook_enabled"})
DOCUMENTS = frozenset({"options"})
#: what a failed quick read falls back from: the read model then answers, or reports, as it always did
FALLBACK = (sqlite3.Error, ValueError, TypeError, KeyError)


def read(question: str, *args: Any) -> Any:
    """The answer to one of the read model's questions (`registry_statuses`, `registry_details`,
    `registry_detail`), quickly when the database allows, else from the read model."""
    conn = connect()
    if conn is not None:
        with closing(conn):
            try:
                return QUESTIONS[question](conn, *args)
            except FALLBACK:
                pass
    from watcher import readmodel
    from watcher.db import session_scope

    with session_scope() as session:
        return getattr(readmodel, question)(session, *args)


def connect() -> sqlite3.Connection | None:
    """The default SQLite database, set up as the engine sets it up, when it exists and its schema is
    current; else None."""
    settings = get_settings()
    path = Path(settings.data_dir) / "watcher.db"
    if settings.database_url or not path.is_file() or any(c in str(path) for c in "?%#"):
        return None
    create_sqlite_file(path)  # its mode narrowed, as every command does
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        for pragma in ("PRAGMA busy_timeout=30000", "PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON"):
            conn.execute(pragma)
        if [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")] == [HEAD_REVISION]:
            return conn
    except sqlite3.Error:
        pass
    conn.close()
    return None


def registry_statuses(conn: sqlite3.Connection, names: Sequence[str] | None = None) -> list[RegistryStatus]:
    """`readmodel.registry_statuses`: four queries in all."""
    newest = "(SELECT p.id FROM poll_runs p WHERE p.registry_id = r.id AND p.outcome {} ORDER BY p.id DESC LIMIT 1)"
    last_run, last_ok = newest.format("!= 'running'"), newest.format("= 'ok'")
    where = "" if names is None else f"WHERE r.name IN {_marks(names)}"
    rows = _rows(
        conn,
        f"SELECT r.id, r.name, r.provider, r.next_poll_at, r.last_webhook_at, {last_run} AS last_run_id, "
        f"{last_ok} AS last_ok_id FROM registries r {where} ORDER BY r.name",
        list(names or ()),
    )
    ids = [row.id for row in rows]
    if not ids:
        return []
    run_ids = sorted({i for row in rows for i in (row.last_run_id, row.last_ok_id) if i is not None})
    runs_sql = f"SELECT id, finished_at, outcome, error FROM poll_runs WHERE id IN {_marks(run_ids)}"
    runs = {run.id: run for run in _rows(conn, runs_sql, run_ids)} if run_ids else {}
    repositories = dict(
        conn.execute(
            f"SELECT registry_id, count(id) FROM repositories WHERE registry_id IN {_marks(ids)} GROUP BY registry_id",
            ids,
        ).fetchall()
    )
    tags = dict(
        conn.execute(
            "SELECT r.registry_id, count(t.id) FROM repositories r JOIN tags t ON t.repository_id = r.id "
            f"WHERE r.registry_id IN {_marks(ids)} GROUP BY r.registry_id",
            ids,
        ).fetchall()
    )
    return build_statuses(rows, runs, repositories, tags)


def registry_details(conn: sqlite3.Connection, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """`readmodel.registry_details`."""
    where = "" if names is None else f"WHERE r.name IN {_marks(names)}"
    rows = _rows(conn, f"SELECT * FROM registries r {where} ORDER BY r.name", list(names or ()))
    if not rows:
        return []
    statuses = {s.name: s for s in registry_statuses(conn, [r.name for r in rows])}
    ids = [r.id for r in rows]
    newest = "SELECT p.id FROM poll_runs p WHERE p.registry_id = r.id ORDER BY p.id DESC LIMIT 1"
    last_ids = [i for (i,) in conn.execute(f"SELECT ({newest}) FROM registries r WHERE r.id IN {_marks(ids)}", ids)]
    found = [i for i in last_ids if i is not None]
    runs_sql = f"SELECT * FROM poll_runs WHERE id IN {_marks(found)}"
    last_runs = {run.registry_id: run for run in _rows(conn, runs_sql, found)} if found else {}
    return build_details(rows, statuses, last_runs)


def registry_detail(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """`readmodel.registry_detail`: one registry's details, or NotFoundError naming it."""
    if conn.execute("SELECT id FROM registries WHERE name = ?", (name,)).fetchone() is None:
        raise NotFoundError(f"no registry named {name!r}: see `watcher registry list`")
    (detail,) = registry_details(conn, [name])
    return detail


QUESTIONS: dict[str, Callable[..., Any]] = {
    "registry_statuses": registry_statuses,
    "registry_details": registry_details,
    "registry_detail": registry_detail,
}


# ---- plumbing -------------------------------------------------------------------------------------
def _marks(values: Sequence[Any]) -> str:
    """`(?, ?, ?)`: one parameter for each value of an IN list."""
    return f"({', '.join('?' * len(values))})"


def _rows(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[SimpleNamespace]:
    """Rows as the ORM gives them: columns as attributes, times aware UTC, flags bool, JSON decoded."""
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [SimpleNamespace(**{n: _value(n, v) for n, v in zip(names, values, strict=True)}) for values in cursor]


def _value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in MOMENTS:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if name in FLAGS:
        return bool(value)
    if name in DOCUMENTS:
        return json.loads(value)
    return value
