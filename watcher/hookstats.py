"""Counting received notifications with one transaction per group, not per notification.

A registry that pushes many images sends a notification per layer and per manifest, often dozens at
once. A transaction per notification made them queue on the database's write lock (SQLite allows one
writer; each commit waits for its WAL fsync), and that wait was most of the receiver's answer time.
So `record` is a group commit: every caller adds its count to the pending set and then takes the writer's
turn; whoever holds the turn writes everything pending in one transaction (one upsert per counter, one
UPDATE per registry). When `record` returns, its count is committed, by this caller or by one before it,
exactly as before; under a burst, one commit serves all the requests that arrived during the previous one.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update

from watcher import counters
from watcher.db import session_scope
from watcher.models import Registry, utcnow

METRIC = "watcher_webhooks_total"


@dataclass(frozen=True)
class Outcome:
    """One notification's outcome, as counted: `seen` says whether it sets the registry's last webhook."""

    registry_id: int
    registry: str
    format: str
    outcome: str
    seen: bool


_pending: Counter[Outcome] = Counter()
_last_seen: dict[int, datetime] = {}
_pending_lock = threading.Lock()  # guards the two above, for a moment
_writer = threading.Lock()  # the writer's turn: held for a whole transaction


def record(outcome: Outcome) -> None:
    """Count `outcome` (and set its registry's `last_webhook_at` if `seen`); returns once it is committed."""
    with _pending_lock:
        _pending[outcome] += 1
        if outcome.seen:
            _last_seen[outcome.registry_id] = utcnow()
    with _writer:
        with _pending_lock:
            batch, seen = Counter(_pending), dict(_last_seen)
            _pending.clear()
            _last_seen.clear()
        if not batch:
            return
        try:
            _write(batch, seen)
        except BaseException:  # this caller sees the error; the counts it carried wait for the next writer
            with _pending_lock:
                _pending.update(batch)
                for registry_id, at in seen.items():
                    _last_seen.setdefault(registry_id, at)
            raise


def _write(batch: Counter[Outcome], seen: dict[int, datetime]) -> None:
    increments = [
        counters.Increment(METRIC, {"registry": o.registry, "format": o.format, "outcome": o.outcome}, n)
        for o, n in batch.items()
    ]
    with session_scope() as session:
        counters.add(session, increments)
        for registry_id, at in sorted(seen.items()):
            session.execute(update(Registry).where(Registry.id == registry_id).values(last_webhook_at=at))
