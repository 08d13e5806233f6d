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
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from watcher.models import PollRun, utcnow
from watcher.settings import get_settings

Trigger = Literal["schedule", "webhook", "manual"]
TRIGGERS: tuple[Trigger, ...] = ("schedule", "webhook", "manual")
#: a poll commits its repositories in groups as it goes (`watcher.polling.saving`): those are kept
UNFINISHED = "the repositories it committed stay saved, the others are listed again by the next poll"
LAPSED = f"its worker stopped before the poll finished (the lease lapsed); {UNFINISHED}"
LAPSED_REPOSITORY = f"its worker stopped before the poll finished (it ran past its deadline); {UNFINISHED}"


def start(session: Session, registry_id: int, trigger: Trigger = "schedule", *, taken_over: bool = True) -> int:
    """Record a new registry-wide run, right after claiming the registry: any such run still `running`
    there is dead. A registry claimed free (not `taken_over`: its last poll released it in the transaction
    that closed its run) has none, so nothing is looked for."""
    if taken_over:
        abandon_running(session, registry_id)
    prune(session, registry_id)
    run = PollRun(registry_id=registry_id, trigger=trigger)
    session.add(run)
    session.flush()
    return run.id


def start_repositories(
    session: Session, registry_id: int, repositories: list[str], trigger: Trigger, *, lapses_after: timedelta
) -> int:
    """Record a new run of a poll of `repositories` only; the registry's repository runs still `running`
    after `lapses_after` (longer than any may run) are closed as dead."""
    session.execute(
        update(PollRun)
        .where(
            PollRun.registry_id == registry_id,
            PollRun.outcome == "running",
            PollRun.listed_repositories.is_not(None),
            PollRun.started_at < utcnow() - lapses_after,
        )
        .values(finished_at=utcnow(), outcome="abandoned", error=LAPSED_REPOSITORY)
    )
    run = PollRun(registry_id=registry_id, trigger=trigger, listed_repositories=list(repositories))
    session.add(run)
    session.flush()
    return run.id


def abandon_running(session: Session, registry_id: int) -> None:
    """Registry-wide runs left `running` by a poll whose lease lapsed: whoever claims the registry next
    closes them (repository runs beside it are not its business)."""
    session.execute(
        update(PollRun)
        .where(
            PollRun.registry_id == registry_id,
            PollRun.outcome == "running",
            PollRun.listed_repositories.is_(None),
        )
        .values(finished_at=utcnow(), outcome="abandoned", error=LAPSED)
    )


#: how many of a registry's oldest finished runs a poll looks at to prune: more than a poll adds, so the
#: history shrinks to its days after a burst of webhook polls, or after `WATCHER_POLL_HISTORY_DAYS` shrinks
PRUNE_AT_ONCE = 16


def prune(session: Session, registry_id: int) -> None:
    """Forget this registry's finished runs older than `WATCHER_POLL_HISTORY_DAYS`: of its oldest
    PRUNE_AT_ONCE finished runs (by id, on the index of (registry_id, id)), those started before the cutoff.
    Never a scan of its whole history, which a month of one-minute polls makes 43,200 runs, on every poll."""
    cutoff = utcnow() - timedelta(days=max(1, get_settings().poll_history_days))
    oldest = (
        select(PollRun.id)
        .where(PollRun.registry_id == registry_id, PollRun.outcome != "running")
        .order_by(PollRun.id)
        .limit(PRUNE_AT_ONCE)
    )
    session.execute(delete(PollRun).where(PollRun.id.in_(oldest), PollRun.started_at < cutoff))


def finish(session: Session, run_id: int, outcome: str, *, error: str = "", **counts: int) -> None:
    session.execute(
        update(PollRun).where(PollRun.id == run_id).values(finished_at=utcnow(), outcome=outcome, error=error, **counts)
    )
