"""Which registries are due, and claiming each due poll exactly once however many beats are running.

Every registry is claimed in a transaction of its own, so one broken row (an interval that cannot be
scheduled, a value the database cannot give back) is logged once, set aside for `PARK`, and never keeps
the tick from dispatching the others.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update

from watcher.db import session_scope
from watcher.models import Registry
from watcher.spec import format_interval

log = logging.getLogger("watcher")
#: how long a registry whose row cannot be scheduled is left aside before it is tried (and logged) again
PARK = timedelta(hours=1)


def claim_due(engine: Engine, now: datetime) -> list[str]:
    """Names of registries due at `now`, each moved to its next slot by a compare-and-set, so that two
    schedulers ticking at once dispatch each due poll once. The slot dispatched stays in `due_since` until
    a poll starts (a poll still waiting in a busy queue is late: `watcher_schedule_lag_seconds`)."""
    with session_scope(engine) as session:
        due = session.execute(select(Registry.id, Registry.name).where(Registry.next_poll_at <= now)).all()
    claimed: list[str] = []
    for registry_id, name in due:
        try:
            if _claim_slot(engine, registry_id, now):
                claimed.append(name)
        except Exception as exc:
            _park(engine, registry_id, name, now, exc)
    return claimed


def _claim_slot(engine: Engine, registry_id: int, now: datetime) -> bool:
    with session_scope(engine) as session:
        slot, interval = session.execute(
            select(Registry.next_poll_at, Registry.interval_seconds).where(Registry.id == registry_id)
        ).one()
        if slot > now:
            return False  # another scheduler moved it meanwhile
        moved = session.execute(
            update(Registry)
            .where(Registry.id == registry_id, Registry.next_poll_at == slot)
            .values(next_poll_at=next_slot(slot, interval, now), due_since=func.coalesce(Registry.due_since, slot))
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]


def _park(engine: Engine, registry_id: int, name: str, now: datetime, exc: Exception) -> None:
    """Set a registry that cannot be scheduled aside for a while, saying once which and why."""
    reason = (str(exc) or type(exc).__name__).splitlines()[0]
    log.error(
        "registry %r: not polled: its schedule cannot be computed (%s); fix it with `watcher registry apply` "
        "(tried again in %s)",
        name,
        reason,
        format_interval(int(PARK.total_seconds())),
    )
    try:
        with session_scope(engine) as session:
            session.execute(update(Registry).where(Registry.id == registry_id).values(next_poll_at=now + PARK))
    except Exception as park_error:
        log.error("registry %r: could not be set aside: %s", name, str(park_error).splitlines()[0])


def next_slot(slot: datetime, interval_seconds: int, now: datetime) -> datetime:
    """The first slot after `now` on the registry's own grid (a late tick does not shift the grid)."""
    if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int) or interval_seconds < 1:
        raise ValueError(f"interval_seconds {interval_seconds!r} is not a positive whole number of seconds")
    try:
        step = timedelta(seconds=interval_seconds)
        missed = max(0, int((now - slot) / step))
        return slot + step * (missed + 1)
    except OverflowError:
        raise ValueError(f"interval_seconds {interval_seconds} puts the next poll past the year 9999") from None
