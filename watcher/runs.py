"""The history of polls (`poll_runs`): a run is started with its claim, finished once, and pruned in time.

Outcomes: `running` while a poll holds its lease; `ok`; `failed` (the registry, its data or its options
were at fault: `error` says how); `abandoned` (the poll stopped without finishing: its process was asked
to stop, or died and its lease lapsed).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from watcher.models import PollRun, utcnow
from watcher.settings import get_settings

LAPSED = "its worker stopped before the poll finished (the lease lapsed); nothing was saved"


def start(session: Session, registry_id: int) -> int:
    """Record a new run, right after claiming the registry: any run still `running` there is dead."""
    abandon_running(session, registry_id)
    prune(session, registry_id)
    run = PollRun(registry_id=registry_id)
    session.add(run)
    session.flush()
    return run.id


def abandon_running(session: Session, registry_id: int) -> None:
    """Runs left `running` by a poll whose lease lapsed: whoever claims the registry next closes them."""
    session.execute(
        update(PollRun)
        .where(PollRun.registry_id == registry_id, PollRun.outcome == "running")
        .values(finished_at=utcnow(), outcome="abandoned", error=LAPSED)
    )


def prune(session: Session, registry_id: int) -> None:
    """Forget this registry's finished runs older than `WATCHER_POLL_HISTORY_DAYS` (one indexed delete)."""
    cutoff = utcnow() - timedelta(days=max(1, get_settings().poll_history_days))
    session.execute(
        delete(PollRun).where(
            PollRun.registry_id == registry_id, PollRun.started_at < cutoff, PollRun.outcome != "running"
        )
    )


def finish(session: Session, run_id: int, outcome: str, *, error: str = "", **counts: int) -> None:
    session.execute(
        update(PollRun).where(PollRun.id == run_id).values(finished_at=utcnow(), outcome=outcome, error=error, **counts)
    )
