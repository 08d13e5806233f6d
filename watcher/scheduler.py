"""Which registries are due, and claiming each due poll exactly once however many beats are running."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from watcher.db import session_scope
from watcher.models import Registry


def claim_due(engine: Engine, now: datetime) -> list[str]:
    """Names of registries due at `now`, each moved to its next slot by a compare-and-set, so that two
    schedulers ticking at once dispatch each due poll once."""
    claimed: list[str] = []
    with session_scope(engine) as session:
        due = session.execute(
            select(Registry.id, Registry.name, Registry.next_poll_at, Registry.interval_seconds).where(
                Registry.next_poll_at <= now
            )
        ).all()
        for registry_id, name, slot, interval in due:
            moved = session.execute(
                update(Registry)
                .where(Registry.id == registry_id, Registry.next_poll_at == slot)
                .values(next_poll_at=next_slot(slot, interval, now))
            )
            if moved.rowcount:  # type: ignore[attr-defined]
                claimed.append(name)
    return claimed


def next_slot(slot: datetime, interval_seconds: int, now: datetime) -> datetime:
    """The first slot after `now` on the registry's own grid (a late tick does not shift the grid)."""
    step = timedelta(seconds=interval_seconds)
    missed = max(0, int((now - slot) / step))
    return slot + step * (missed + 1)
