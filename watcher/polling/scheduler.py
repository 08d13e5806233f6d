"""Which registries are due, and claiming each due poll exactly once however many beats are running.

Every registry has a grid of its own: the slots `phase + k * interval` counted from the Unix epoch, where
the phase is a stable hash of its key (`watcher.registrations.keys`) modulo its interval (`phase_of`). So
registries that share an interval (registered together by one `registry apply`, say) fall due spread over
the interval, not all at once, and a late tick never shifts a grid; a changed interval is a new grid. The
tick hands out registries by key.

A slot is dispatched only when the registry's previous scheduled poll is neither waiting in the queue
(`due_since` is set: dispatched, not started) nor running (its lease is held): a slot that passes while the
poll waits is skipped (the waiting poll serves it), one that passes while it runs waits for the lease to be
free, and either way the lateness shows in `watcher_schedule_lag_seconds` instead of piling up in the queue.
The tick asks for at most `room` polls (what the pool can start soon, `watcher.polling.pool`), and when
more are due than that, workspaces take turns: each round gives every workspace with a due poll one, its
own most overdue, starting with the workspace that holds the fewest polls queued or running (then the one
whose poll is most overdue). So one team's backlog is not a queue every other team waits behind: a team
with a few registries gets its polls dispatched at the tick they fall due, however many another has due.
A workspace's `max_concurrent_polls` bounds its polls queued (`due_since` set) plus running (lease held),
deployment-wide: its claim counts them in the same statement that marks the slot dispatched, with the
workspace's row locked (PostgreSQL; SQLite runs one writer at a time), so ticks running at once never
dispatch past it; its polls over the bound stay due, late, like any the pool has no room for. Manual and
webhook polls are not held back by it (someone waits for them), but while they run they count.

A tick claims its registries in one transaction, one compare-and-set UPDATE each against what the tick
read (a commit is most of what a claim costs the database server, and a minute of a thousand registries is
a thousand claims). A row whose next slot cannot be computed (an interval that cannot be scheduled) is
logged once and set aside for `PARK` without stopping the others; if the database fails the tick's
transaction (a deadlock with another tick, a row it cannot update), the tick claims again with every
registry in a transaction of its own, so one broken row never keeps the tick from dispatching the others.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import ColumnElement, Engine, Select, func, or_, select, update
from sqlalchemy.orm import Session

from watcher.db import session_scope
from watcher.models import Registry
from watcher.registrations.keys import registry_key, split_key
from watcher.registrations.spec import format_interval
from watcher.schema import registries, workspaces

log = logging.getLogger("watcher")
#: how long a registry whose row cannot be scheduled is left aside before it is tried (and logged) again
PARK = timedelta(hours=1)
#: where every registry's grid is counted from
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: a new grid of an interval up to this long is first polled at its first slot; a longer one at once
FIRST_SLOT_WITHIN = timedelta(seconds=60)


@dataclass(frozen=True)
class Due:
    """A registry whose slot has come, as the tick read it."""

    registry_id: int
    workspace_id: int
    key: str
    due_since: datetime | None
    slot: datetime
    #: the interval its slot was read with: a claim moves it on that grid only if it is still the registry's
    interval: int = 0


class Claim(Enum):
    DISPATCHED = "dispatched"
    #: another scheduler moved the slot, or a poll took the lease, meanwhile
    TAKEN = "taken"
    #: the workspace holds its `max_concurrent_polls` already
    FULL = "full"


def claim_due(
    engine: Engine, now: datetime, room: int | None = None, lost: Callable[[list[str]], set[str]] = lambda _: set()
) -> list[str]:
    """Keys of registries to poll now (`watcher.registrations.keys`), at most `room` of them (None: no
    bound), the workspaces taking turns (the module's rules), each workspace's longest due first. Each is
    moved to its next slot by a compare-and-set, so that two schedulers ticking at once dispatch each due
    poll once. The slot dispatched stays in `due_since` until a poll starts (a poll still waiting in a busy
    queue is late: `watcher_schedule_lag_seconds`); while it does, the registry's further slots are skipped
    rather than queued again, unless `lost` says its task is gone (`watcher.polling.pool.lost`)."""
    with session_scope(engine) as session:
        due = [
            Due(registry_id, workspace_id, registry_key(workspace, name), due_since, slot, interval)
            for registry_id, workspace_id, workspace, name, due_since, slot, interval in session.execute(
                select(
                    Registry.id,
                    Registry.workspace_id,
                    workspaces.c.name,
                    Registry.name,
                    Registry.due_since,
                    Registry.next_poll_at,
                    Registry.interval_seconds,
                )
                .join(workspaces, workspaces.c.id == Registry.workspace_id)
                .where(Registry.next_poll_at <= now, _lease_free(now))
                .order_by(Registry.next_poll_at, Registry.id)
            ).all()
        ]
        limits, held = _shares(session, {d.workspace_id for d in due}, now) if due else ({}, {})
    if not due:
        return []
    gone = lost([d.key for d in due if d.due_since is not None])
    waiting = [d for d in due if d.due_since is not None and d.key not in gone]
    ready = [d for d in due if d.due_since is None or d.key in gone]
    for d in ready:
        if d.due_since is not None:  # lost: it holds nothing any more
            held[d.workspace_id] = max(0, held.get(d.workspace_id, 0) - 1)
    broken: list[tuple[Due, Exception]] = []

    def in_the_tick(d: Due, dispatch: bool, limit: int | None) -> Claim | None:
        try:
            return _claim_slot(claims, d, now, dispatch=dispatch, limit=limit)
        except ValueError as exc:  # its next slot cannot be computed: set aside once the claims commit
            broken.append((d, exc))
            return None

    def apart(d: Due, dispatch: bool, limit: int | None) -> Claim | None:
        try:
            with session_scope(engine) as own:
                return _claim_slot(own, d, now, dispatch=dispatch, limit=limit)
        except Exception as exc:
            _park(engine, d, now, exc)
            return None

    try:
        with session_scope(engine, bookkeeping=True) as claims:
            claimed = _claims(waiting, ready, room, dict(held), limits, in_the_tick)
    except Exception:  # the database failed the tick's transaction: each registry in a transaction of its own
        return _claims(waiting, ready, room, held, limits, apart)
    for d, exc in broken:
        _park(engine, d, now, exc)
    return claimed


def _claims(
    waiting: list[Due],
    ready: list[Due],
    room: int | None,
    held: dict[int, int],
    limits: dict[int, int],
    claim: Callable[[Due, bool, int | None], Claim | None],
) -> list[str]:
    """Move the slots of the polls still waiting, then dispatch the ready ones in turns, at most `room`;
    the keys dispatched. `claim(due, dispatch, limit)` claims one (None: it could not be)."""
    for d in waiting:
        claim(d, False, None)
    claimed: list[str] = []
    for d in _turns(ready, held, limits):
        if room is not None and len(claimed) >= room:
            break  # the others stay due (and counted as lag) until the pool has room
        outcome = claim(d, True, limits.get(d.workspace_id))
        if outcome is Claim.DISPATCHED:
            claimed.append(d.key)
            held[d.workspace_id] = held.get(d.workspace_id, 0) + 1
        elif outcome is Claim.FULL:  # another tick dispatched meanwhile
            held[d.workspace_id] = limits[d.workspace_id]
    return claimed


def _shares(session: Session, ids: set[int], now: datetime) -> tuple[dict[int, int], dict[int, int]]:
    """Of these workspaces: the `max_concurrent_polls` of those that have one, and how many polls each holds
    now (queued, not started; or running)."""
    limits = dict(
        session.execute(
            select(workspaces.c.id, workspaces.c.max_concurrent_polls).where(
                workspaces.c.id.in_(ids), workspaces.c.max_concurrent_polls.is_not(None)
            )
        ).all()
    )
    held = dict(
        session.execute(
            select(Registry.workspace_id, func.count())
            .where(Registry.workspace_id.in_(ids), _held(now))
            .group_by(Registry.workspace_id)
        ).all()
    )
    return limits, held


def _turns(ready: list[Due], held: dict[int, int], limits: dict[int, int]) -> Iterator[Due]:
    """The due polls in the order they are dispatched: rounds of one a workspace (its most overdue), the
    workspace holding the fewest polls first in each; a workspace drops out once it holds its
    `max_concurrent_polls` (`held`, which the caller updates as its claims succeed)."""
    queues: dict[int, deque[Due]] = {}
    for d in ready:  # oldest slot first
        queues.setdefault(d.workspace_id, deque()).append(d)
    order = sorted(queues, key=lambda ws: (held.get(ws, 0), queues[ws][0].slot, ws))
    while order:
        for ws in list(order):
            limit = limits.get(ws)
            if not queues[ws] or (limit is not None and held.get(ws, 0) >= limit):
                order.remove(ws)
                continue
            yield queues[ws].popleft()


def _lease_free(now: datetime) -> ColumnElement[bool]:
    return or_(Registry.lease_until.is_(None), Registry.lease_until < now)


def _held(now: datetime) -> ColumnElement[bool]:
    """A poll of the registry is queued and not started, or running."""
    return or_(Registry.due_since.is_not(None), Registry.lease_until >= now)


def _claim_slot(session: Session, due: Due, now: datetime, *, dispatch: bool, limit: int | None = None) -> Claim:
    """Move the registry past `now` on its grid; with `dispatch`, also mark the slot as dispatched — unless
    meanwhile (since the tick read it) another scheduler moved its slot or dispatched it, its interval
    changed, a poll took the lease, or (`limit`) its workspace came to hold that many polls. One UPDATE; a
    ValueError (before it) when the next slot cannot be computed."""
    values: dict[str, object] = {"next_poll_at": next_slot(due.interval, now, phase_of(due.key, due.interval))}
    if dispatch and limit is not None and session.get_bind().dialect.name == "postgresql":
        # ticks claiming in one workspace count its polls one at a time (SQLite: one writer at a time)
        session.execute(
            select(workspaces.c.id).where(workspaces.c.id == due.workspace_id).with_for_update(key_share=True)
        )
    claim = update(Registry).where(
        Registry.id == due.registry_id, Registry.next_poll_at == due.slot, Registry.interval_seconds == due.interval
    )
    if dispatch:
        values["due_since"] = due.slot
        unchanged = Registry.due_since.is_(None) if due.due_since is None else Registry.due_since == due.due_since
        claim = claim.where(_lease_free(now), unchanged)
        if limit is not None:  # counted in the statement that claims, not taken from what the tick read
            claim = claim.where(_holding(due, now).scalar_subquery() < limit)
    moved = session.execute(claim.values(**values))
    if moved.rowcount:  # type: ignore[attr-defined]
        return Claim.DISPATCHED
    if limit is not None and (session.scalar(_holding(due, now)) or 0) >= limit:
        return Claim.FULL
    return Claim.TAKEN


def _holding(due: Due, now: datetime) -> Select[int]:
    """How many polls the registry's workspace holds, not counting this registry's."""
    others = registries.alias("others")
    return (
        select(func.count())
        .select_from(others)
        .where(
            others.c.workspace_id == due.workspace_id,
            others.c.id != due.registry_id,
            or_(others.c.due_since.is_not(None), others.c.lease_until >= now),
        )
    )


def unqueue(engine: Engine, key: str, *, due_at: datetime | None = None) -> None:
    """The registry's scheduled poll is not waiting any more though it did not claim the registry (it found
    another poll running, or could not be queued at all: then `due_at`, to be dispatched again then)."""
    values: dict[str, object] = {"due_since": None} if due_at is None else {"due_since": None, "next_poll_at": due_at}
    with session_scope(engine) as session:
        session.execute(update(Registry).where(_is(key), Registry.due_since.is_not(None)).values(values))


def _is(key: str) -> ColumnElement[bool]:
    """The registry of `key`, as a condition on the registries table."""
    workspace, name = split_key(key)
    in_workspace = select(workspaces.c.id).where(workspaces.c.name == workspace).scalar_subquery()
    return (Registry.name == name) & (Registry.workspace_id == in_workspace)


def _park(engine: Engine, due: Due, now: datetime, exc: Exception) -> None:
    """Set a registry that cannot be scheduled aside for a while, saying once which and why (the tick that
    moves its slot says it: two ticking at once do not both)."""
    reason = (str(exc) or type(exc).__name__).splitlines()[0]
    try:
        with session_scope(engine) as session:
            parked = session.execute(
                update(Registry)
                .where(Registry.id == due.registry_id, Registry.next_poll_at == due.slot)
                .values(next_poll_at=now + PARK)
            )
        if not parked.rowcount:  # type: ignore[attr-defined]
            return
    except Exception as park_error:
        log.error("registry %r: could not be set aside: %s", due.key, str(park_error).splitlines()[0])
    log.error(
        "registry %r: not polled: its schedule cannot be computed (%s); fix it with `watcher registry apply` "
        "(tried again in %s)",
        due.key,
        reason,
        format_interval(int(PARK.total_seconds())),
    )


def phase_of(key: str, interval_seconds: int) -> int:
    """The registry's stable offset into its interval, in whole seconds, a hash of its key (its name in the
    workspace `default`): spreads registries of one interval evenly over it, the same in every process and
    after every restart, and two teams' registries of one name apart."""
    _check(interval_seconds)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % interval_seconds


def first_slot(key: str, interval_seconds: int, now: datetime) -> datetime:
    """When a new grid (a new registry, or a new interval) saved with many others is first polled: at its first
    slot when its interval is at most FIRST_SLOT_WITHIN, else at once. Registries of a minute's interval
    registered together
    then take their baselines spread over the minute, as the pool takes their later polls, instead of all at
    once with their first slots falling due on top of them (twice a minute's work in the first minute: a
    backlog that the pool's spare capacity takes minutes to drain); a longer interval is not waited for."""
    if timedelta(seconds=interval_seconds) > FIRST_SLOT_WITHIN:
        return now
    return next_slot(interval_seconds, now, phase_of(key, interval_seconds))


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
