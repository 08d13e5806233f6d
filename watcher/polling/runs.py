"""The history of polls (`poll_runs`): a run is started with its poll, finished once, and pruned in time.

Outcomes: `running` while its poll works; `ok`; `failed` (the registry, its data or its options were at
fault: `error` says how); `abandoned` (the poll stopped without finishing: its process was asked to stop,
or died). Triggers: `schedule` (beat's tick), `manual` (`watcher poll`, the API's and the console's "Poll
now") and `webhook` (a notification's poll of the repositories it named).

A registry-wide run starts with its poll's claim on the registry, so any other registry-wide run still
`running` there is dead. A poll of some repositories only (`listed_repositories`) takes no claim and runs
beside the others; it is dead once it has been running longer than any such poll may, and the registry's
next repository poll closes it. Only registry-wide runs say how the registry is doing (`watcher status`):
one repository listed well says nothing of the catalog or of the others, and one that failed is reported
by its own run while the next scheduled poll lists it again.

Written in SQLAlchemy Core on `watcher.schema.poll_runs`, in a Core connection or an ORM session alike: a
poll records its run before its first request to the registry, and `watcher poll` gets there without
importing the ORM (`watcher.polling.claim`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import delete, insert, select, update

from watcher.schema import poll_runs as POLL_RUNS
from watcher.schema import utcnow
from watcher.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    Writer = Connection | Session

Trigger = Literal["schedule", "webhook", "manual"]
TRIGGERS: tuple[Trigger, ...] = ("schedule", "webhook", "manual")
#: a poll commits its repositories in groups as it goes (`watcher.polling.saving`): those are kept
UNFINISHED = "the repositories it committed stay saved, the others are listed again by the next poll"
LAPSED = f"its worker stopped before the poll finished (the lease lapsed); {UNFINISHED}"
LAPSED_REPOSITORY = f"its worker stopped before the poll finished (it ran past its deadline); {UNFINISHED}"
RUN = POLL_RUNS.c


def start(session: Writer, registry_id: int, trigger: Trigger = "schedule", *, taken_over: bool = True) -> int:
    """Record a new registry-wide run, right after claiming the registry: any such run still `running`
    there is dead. A registry claimed free (not `taken_over`: its last poll released it in the transaction
    that closed its run) has none, so nothing is looked for."""
    if taken_over:
        abandon_running(session, registry_id)
    prune(session, registry_id)
    return _insert(session, registry_id=registry_id, trigger=trigger)


def start_repositories(
    session: Writer, registry_id: int, repositories: list[str], trigger: Trigger, *, lapses_after: timedelta
) -> int:
    """Record a new run of a poll of `repositories` only; the registry's repository runs still `running`
    after `lapses_after` (longer than any may run) are closed as dead."""
    session.execute(
        update(POLL_RUNS)
        .where(
            RUN.registry_id == registry_id,
            RUN.outcome == "running",
            RUN.listed_repositories.is_not(None),
            RUN.started_at < utcnow() - lapses_after,
        )
        .values(finished_at=utcnow(), outcome="abandoned", error=LAPSED_REPOSITORY)
    )
    return _insert(session, registry_id=registry_id, trigger=trigger, listed_repositories=list(repositories))


def _insert(session: Writer, **values: object) -> int:
    """A new run's row (its other columns at their defaults: `running`, now), and its id."""
    inserted = session.execute(insert(POLL_RUNS).values(**values))
    return int(inserted.inserted_primary_key[0])  # type: ignore[attr-defined]


def abandon_running(session: Writer, registry_id: int) -> None:
    """Registry-wide runs left `running` by a poll whose lease lapsed: whoever claims the registry next
    closes them (repository runs beside it are not its business)."""
    session.execute(
        update(POLL_RUNS)
        .where(
            RUN.registry_id == registry_id,
            RUN.outcome == "running",
            RUN.listed_repositories.is_(None),
        )
        .values(finished_at=utcnow(), outcome="abandoned", error=LAPSED)
    )


#: how many of a registry's oldest finished runs a poll looks at to prune: more than a poll adds, so the
#: history shrinks to its days after a burst of webhook polls, or after `WATCHER_POLL_HISTORY_DAYS` shrinks
PRUNE_AT_ONCE = 16


def prune(session: Writer, registry_id: int) -> None:
    """Forget this registry's finished runs older than `WATCHER_POLL_HISTORY_DAYS`: of its oldest
    PRUNE_AT_ONCE finished runs (by id, on the index of (registry_id, id)), those started before the cutoff.
    Never a scan of its whole history, which a month of one-minute polls makes 43,200 runs, on every poll."""
    cutoff = utcnow() - timedelta(days=max(1, get_settings().poll_history_days))
    oldest = (
        select(RUN.id)
        .where(RUN.registry_id == registry_id, RUN.outcome != "running")
        .order_by(RUN.id)
        .limit(PRUNE_AT_ONCE)
    )
    session.execute(delete(POLL_RUNS).where(RUN.id.in_(oldest), RUN.started_at < cutoff))


def finish(session: Writer, run_id: int, outcome: str, *, error: str = "", **counts: int) -> None:
    session.execute(
        update(POLL_RUNS).where(RUN.id == run_id).values(finished_at=utcnow(), outcome=outcome, error=error, **counts)
    )
