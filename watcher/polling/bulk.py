"""Many rows in one statement: what a poll's commit writes in bulk (`watcher.polling.saving`).

On PostgreSQL, executemany sends one INSERT or UPDATE per row (pipelined, but each one parsed, planned and
run by the server); `INSERT … SELECT FROM unnest()` and `UPDATE … FROM unnest()` take one array per column
instead, one statement for the lot. SQLite's executemany already runs in C, so it is kept there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Table, bindparam, insert, update
from sqlalchemy.orm import Session


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows (every one with the same keys). On PostgreSQL, one `INSERT … SELECT FROM unnest()`
    of one array per column: one statement for the server to run, not one per row as executemany sends;
    elsewhere (SQLite: executemany runs in C) one executemany."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(table), rows)
        return
    columns = [table.c[key] for key in rows[0]]
    arrays, casts = _arrays(session, columns, rows)
    names = ", ".join(column.name for column in columns)
    session.connection().exec_driver_sql(f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({casts})", arrays)


def update_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Update many rows by primary key `id`: each dict has `id` and the new values (all the same keys).
    On PostgreSQL one `UPDATE … FROM unnest()`, elsewhere one executemany."""
    if not rows:
        return
    keys = [key for key in rows[0] if key != "id"]
    if session.get_bind().dialect.name != "postgresql":
        values: dict[str, Any] = {key: bindparam(f"_{key}") for key in keys}
        statement = update(table).where(table.c.id == bindparam("_id")).values(values)
        session.execute(statement, [{f"_{key}": value for key, value in row.items()} for row in rows])
        return
    columns = [table.c.id, *(table.c[key] for key in keys)]
    arrays, casts = _arrays(session, columns, rows)
    names = ", ".join(column.name for column in columns)
    sets = ", ".join(f"{key} = u.{key}" for key in keys)
    sql = f"UPDATE {table.name} SET {sets} FROM unnest({casts}) AS u({names}) WHERE {table.name}.id = u.id"
    session.connection().exec_driver_sql(sql, arrays)


def _arrays(session: Session, columns: list[Column[Any]], rows: list[dict[str, Any]]) -> tuple[tuple[Any, ...], str]:
    """One list per column, its values as the column's type binds them (UTCDateTime: naive UTC), and the
    `%s::TYPE[]` placeholders that give the server each array's type (so an all-NULL array is one too)."""
    dialect = session.get_bind().dialect
    arrays = []
    for column in columns:
        values = [row[column.key] for row in rows]
        process = column.type.bind_processor(dialect)
        arrays.append([process(value) for value in values] if process else values)
    casts = ", ".join(f"%s::{column.type.compile(dialect)}[]" for column in columns)
    return tuple(arrays), casts
