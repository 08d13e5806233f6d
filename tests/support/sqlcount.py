"""Counting what an engine sends: statements (an executemany is one) and commits, for the tests that keep a
poll's cost to the database from growing back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event


@dataclass
class Sent:
    statements: list[str] = field(default_factory=list)
    commits: int = 0

    def verbs(self) -> list[str]:
        """Each statement's first words: `SELECT`, `UPDATE registries`, `INSERT INTO poll_runs`, ..."""
        return [
            " ".join(s.split()[: 3 if s.startswith(("INSERT", "DELETE")) else 2 if s.startswith("UPDATE") else 1])
            for s in self.statements
        ]


@contextmanager
def sent(engine: Engine) -> Iterator[Sent]:
    """What the engine sends while the block runs."""
    seen = Sent()

    def statement(_conn: Any, _cursor: Any, sql: str, _params: Any, _context: Any, _many: bool) -> None:
        seen.statements.append(" ".join(sql.split()))

    def commit(_conn: Any) -> None:
        seen.commits += 1

    listeners: dict[str, Callable[..., None]] = {"before_cursor_execute": statement, "commit": commit}
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)
