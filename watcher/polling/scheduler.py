"""Which registries are due, and claiming each due poll exactly once however many beats are running.

Every registry has a grid of its own: the slots `phase + k * interval` counted from the Unix epoch, where
the phase is a stable hash of its name modulo its interval (`phase_of`). So registries that share an
interval (registered together by one `registry apply`, say) fall due spread over the interval, not all at
once, and a late tick never shifts a grid; a changed interval is a new grid.

A slot is dispatched only when the registry's previous scheduled poll is neither waiting in the queue
(`due_since` is set: dispatched, not started) nor running (its lease is held): a slot that passes while the
poll waits is skipped (the waiting poll serves it), one that passes while it runs waits for the lease to be
free, and either way the lateness shows in `watcher_schedule_lag_seconds` instead of piling up in the queue.
The tick asks for at most `room` polls (what the pool can start soon, `watcher.polling.pool`), the most overdue
first.

Every registry is claimed in a transaction of its own, so one broken row (an interval that cannot be
scheduled, a value the database cannot give back) is logged once, set aside for `PARK`, and never keeps
the tick from dispatching the others.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Engine, or_, select, update

from watcher.db import session_scope
from watcher.models import Registry
from watcher.registrations.spec import format_interval

log = logging.getLogger("watcher")
#: how long a registry whose row cannot be scheduled is left aside before it is tried (and logged) again
PARK = timedelta(hours=1)
#: where every registry's grid is counted from
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: a new grid of an interval up to this long is first polled at its first slot; a longer one at once
FIRST_SLOT_WITHIN = timedelta(seconds=60)


def claim_due(
    engine: Engine, now: datetime, room: int | None = None, lost: Callable[[list[str]], set[str]] = lambda _: set()
) -> list[str]:
    """Names of registries to poll now, at most `room` of them (None: no bound), the longest due first.
    Each is moved to its next slot by a compare-and-set, so that two schedulers ticking at once dispatch
    each due poll once. The slot dispatched stays in `due_since` until a poll starts (a poll still waiting
    in a busy queue is late: `watcher_schedule_lag_seconds`); while it does, the registry's further slots
    are skipped rather than queued again, unless `lost` says its task is gone (`watcher.polling.pool.lost`)."""
    with session_scope(engine) as session:
        due = session.execute(
            select(Registry.id, Registry.name, Registry.due_since, Registry.next_poll_at)
            .where(Registry.next_poll_at <= now, _lease_free(now))
            .order_by(Registry.next_poll_at, Registry.id)
        ).all()
    gone = lost([name for _, name, due_since, _ in due if due_since is not None])
    claimed: list[str] = []
    for registry_id, name, due_since, slot in due:
        waiting = due_since is not None and name not in gone
        if not waiting and room is not None and len(claimed) >= room:
            continue  # stays due (and counted as lag) until the pool has room
        try:
            if _claim_slot(engine, registry_id, name, now, dispatch=not waiting) and not waiting:
                claimed.append(name)
        except Exception as exc:
            _park(engine, registry_id, name, slot, now, exc)
    return claimed


def _lease_free(now: datetime) -> ColumnElement[bool]:
    return or_(Registry.lease_until.is_(None), Registry.lease_until < now)


def _claim_slot(engine: Engine, registry_id: int, name: str, now: datetime, *, dispatch: bool) -> bool:
    """Move the registry past `now` on its grid; with `dispatch`, also mark the slot as dispatched."""
    with session_scope(engine) as session:
        slot, interval, due_since = session.execute(
            select(Registry.next_poll_at, Registry.interval_seconds, Registry.due_since).where(
                Registry.id == registry_id
            )
        ).one()
        if slot > now:
            return False  # another scheduler moved it meanwhile
        values: dict[str, object] = {"next_poll_at": next_slot(interval, now, phase_of(name, interval))}
        claim = update(Registry).where(Registry.id == registry_id, Registry.next_poll_at == slot)
        if dispatch:  # ...unless meanwhile a poll took the lease or another scheduler dispatched it
            values["due_since"] = slot
            unchanged = Registry.due_since.is_(None) if due_since is None else Registry.due_since == due_since
            claim = claim.where(_lease_free(now), unchanged)
        moved = session.execute(claim.values(**values))
        return bool(moved.rowcount)  # type: ignore[attr-defined]


def unqueue(engine: Engine, name: str, *, due_at: datetime | None = None) -> None:
    """The registry's scheduled poll is not waiting any more though it did not claim the registry (it found
    another poll running, or could not be queued at all: then `due_at`, to be dispatched again then)."""
    values: dict[str, object] = {"due_since": None} if due_at is None else {"due_since": None, "next_poll_at": due_at}
    with session_scope(engine) as session:
        session.execute(update(Registry).where(Registry.name == name, Registry.due_since.is_not(None)).values(values))


def _park(engine: Engine, registry_id: int, name: str, slot: datetime, now: datetime, exc: Exception) -> None:
    """Set a registry that cannot be scheduled aside for a while, saying once which and why (the tick that
    moves its slot says it: two ticking at once do not both)."""
    reason = (str(exc) or type(exc).__name__).splitlines()[0]
    try:
        with session_scope(engine) as session:
            parked = session.execute(
                update(Registry)
                .where(Registry.id == registry_id, Registry.next_poll_at == slot)
                .values(next_poll_at=now + PARK)
            )
        if not parked.rowcount:  # type: ignore[attr-defined]
            return
    except Exception as park_error:
        log.error("registry %r: could not be set aside: %s", name, str(park_error).splitlines()[0])
    log.error(
        "registry %r: not polled: its schedule cannot be computed (%s); fix it with `watcher registry apply` "
        "(tried again in %s)",
        name,
        reason,
        format_interval(int(PARK.total_seconds())),
    )


def phase_of(name: str, interval_seconds: int) -> int:
    """The registry's stable offset into its interval, in whole seconds: spreads registries of one interval
    evenly over it, the same in every process and after every restart."""
    _check(interval_seconds)
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % interval_seconds


def first_slot(name: str, interval_seconds: int, now: datetime) -> datetime:
    """When a new grid (a new registry, or a new interval) saved with many others is first polled: at its first
    slot when its interval is at most FIRST_SLOT_WITHIN, else at once. Registries of a minute's interval
    registered together
    then take their baselines spread over the minute, as the pool takes their later polls, instead of all at
    once with their first slots falling due on top of them (twice a minute's work in the first minute: a
    backlog that the pool's spare capacity takes minutes to drain); a longer interval is not waited for."""
    if timedelta(seconds=interval_seconds) > FIRST_SLOT_WITHIN:
        return now
    return next_slot(interval_seconds, now, phase_of(name, interval_seconds))


def next_slot(interval_seconds: int, now: datetime, phase: int = 0) -> datetime:
    """The first slot after `now` on the grid `EPOCH + phase + k * interval` (a late tick does not shift the
    grid, missed slots are skipped)."""
    _check(interval_seconds)
    try:
        step = timedelta(seconds=interval_seconds)
        _ = now + step  # a whole interval from now must fit the calendar, wherever the phase puts the slot
        origin = EPOCH + timedelta(seconds=phase)
        return origin + step * ((now - origin) // step + 1)
    except OverflowError:
        raise ValueError(f"interval_seconds {interval_seconds} puts the next poll past the year 9999") from None


def _check(interval_seconds: int) -> None:
    if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int) or interval_seconds < 1:
        raise ValueError(f"interval_seconds {interval_seconds!r} is not a positive whole number of seconds")
