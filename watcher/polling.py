"""One poll of one registry: claim it, list it, diff against the snapshot, commit snapshot and events.

The listing happens outside any transaction; the new snapshot and the events it implies are written in
one transaction that also bumps the registry's revision, so two pollers can never both commit against
the same snapshot, and a failed or partial listing commits nothing at all.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.orm import Session

from watcher.db import get_engine, session_scope
from watcher.diff import Change, ChangeKind, Listing, TagState, diff
from watcher.errors import RegistryError, StateError, WatcherError
from watcher.events import new_event
from watcher.models import Event, PollRun, Registry, Repository, Tag, utcnow
from watcher.pollers import poller_for
from watcher.registries import find, spec_of
from watcher.scope import Scope
from watcher.spec import RegistrySpec

LEASE = timedelta(minutes=5)  # a crashed poller's claim lapses; the revision check still guards commits


class Busy(WatcherError):
    """Another worker is polling this registry right now."""


@dataclass
class PollResult:
    registry: str
    baseline: bool
    repositories: int
    tags: int
    requests: int
    events: list[Event] = field(default_factory=list)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def poll(name: str, *, engine: Engine | None = None, owner: str | None = None) -> PollResult:
    """Poll `name` once. Raises Busy, NotFoundError or a RegistryError (then nothing changed)."""
    engine = engine or get_engine()
    owner = owner or worker_id()
    with session_scope(engine) as session:
        row = find(session, name)
        registry_id, revision = row.id, row.revision
        spec = spec_of(row)
        if not _claim(session, registry_id, owner):
            raise Busy(f"registry {name!r} is being polled by another worker")
        run = PollRun(registry_id=registry_id)
        session.add(run)
        session.flush()
        run_id = run.id
    try:
        listing, requests = asyncio.run(_list(spec))
        return _commit(engine, spec, registry_id, revision, run_id, owner, listing, requests)
    except BaseException as exc:
        _finish_failed(engine, registry_id, run_id, owner, exc)
        if isinstance(exc, RegistryError):
            exc.registry = name
        raise


async def _list(spec: RegistrySpec) -> tuple[Listing, int]:
    poller = poller_for(spec)
    try:
        return await poller.listing(Scope.from_options(spec.options)), poller.requests
    finally:
        await poller.aclose()


def _claim(session: Session, registry_id: int, owner: str) -> bool:
    now = utcnow()
    claimed = session.execute(
        update(Registry)
        .where(Registry.id == registry_id)
        .where(or_(Registry.lease_until.is_(None), Registry.lease_until < now, Registry.lease_owner == owner))
        .values(lease_owner=owner, lease_until=now + LEASE)
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def _release(session: Session, registry_id: int, owner: str) -> None:
    session.execute(
        update(Registry)
        .where(Registry.id == registry_id, Registry.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def _finish_failed(engine: Engine, registry_id: int, run_id: int, owner: str, exc: BaseException) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(PollRun)
            .where(PollRun.id == run_id)
            .values(finished_at=utcnow(), outcome="failed", error=str(exc) or type(exc).__name__)
        )
        _release(session, registry_id, owner)


def load_snapshot(session: Session, registry_id: int) -> tuple[Listing, dict[str, int]]:
    """The stored snapshot, and each repository's row id."""
    listing: Listing = {}
    repo_ids: dict[str, int] = {}
    for repo_id, repo_name in session.execute(
        select(Repository.id, Repository.name).where(Repository.registry_id == registry_id)
    ):
        repo_ids[repo_name] = repo_id
        listing.setdefault(repo_name, {})
    rows = session.execute(
        select(Repository.name, Tag.name, Tag.digest, Tag.pushed_at)
        .join(Tag, Tag.repository_id == Repository.id)
        .where(Repository.registry_id == registry_id)
    )
    for repo_name, tag, digest, pushed_at in rows:
        listing[repo_name][tag] = TagState(digest, pushed_at)
    return listing, repo_ids


def _commit(
    engine: Engine,
    spec: RegistrySpec,
    registry_id: int,
    revision: int,
    run_id: int,
    owner: str,
    listing: Listing,
    requests: int,
) -> PollResult:
    detected_at = utcnow()
    with session_scope(engine) as session:
        row = session.get(Registry, registry_id)
        if row is None:
            raise StateError(f"registry {spec.name!r} was removed during the poll; nothing was saved")
        baseline = not row.baselined
        bumped = session.execute(
            update(Registry)
            .where(Registry.id == registry_id, Registry.revision == revision)
            .values(revision=revision + 1, baselined=True, lease_owner=None, lease_until=None)
        )
        if not bumped.rowcount:  # type: ignore[attr-defined]
            raise Busy(f"registry {spec.name!r} was polled by another worker meanwhile; nothing was saved")
        stored, repo_ids = load_snapshot(session, registry_id)
        scope = Scope.from_options(spec.options)
        _drop_out_of_scope(session, stored, repo_ids, scope)
        changes = diff(scope.restrict(stored), listing)
        _write_snapshot(session, registry_id, repo_ids, changes, detected_at)
        events: list[Event] = []
        if not baseline or spec.emit_existing:
            events = [new_event(registry_id, spec.name, spec.url, c, detected_at) for c in changes]
            session.add_all(events)
        session.execute(
            update(PollRun)
            .where(PollRun.id == run_id)
            .values(
                finished_at=utcnow(),
                outcome="ok",
                repositories=len(listing),
                tags=sum(len(t) for t in listing.values()),
                events=len(events),
                requests=requests,
            )
        )
    return PollResult(
        registry=spec.name,
        baseline=baseline,
        repositories=len(listing),
        tags=sum(len(t) for t in listing.values()),
        requests=requests,
        events=events,
    )


def _drop_out_of_scope(session: Session, stored: Listing, repo_ids: dict[str, int], scope: Scope) -> None:
    """Repositories and tags the registry no longer watches leave the snapshot silently."""
    for repo, tags in stored.items():
        if not scope.wants_repository(repo):
            session.execute(delete(Repository).where(Repository.id == repo_ids[repo]))
            continue
        unwanted = [tag for tag in tags if not scope.wants_tag(tag)]
        if unwanted:
            session.execute(delete(Tag).where(Tag.repository_id == repo_ids[repo], Tag.name.in_(unwanted)))


def _write_snapshot(
    session: Session, registry_id: int, repo_ids: dict[str, int], changes: list[Change], now: datetime
) -> None:
    """Apply the changes to the stored rows; an unchanged repository is not written at all."""
    touched: set[int] = set()
    for change in changes:
        repo_id = repo_ids.get(change.repository)
        if repo_id is None:
            repo = Repository(registry_id=registry_id, name=change.repository, first_seen_at=now)
            session.add(repo)
            session.flush()
            repo_id = repo_ids[change.repository] = repo.id
        touched.add(repo_id)
        if change.kind is ChangeKind.ADDED:
            session.add(Tag(repository_id=repo_id, name=change.tag, digest=change.digest, pushed_at=change.pushed_at))
        elif change.kind is ChangeKind.UPDATED:
            session.execute(
                update(Tag)
                .where(Tag.repository_id == repo_id, Tag.name == change.tag)
                .values(digest=change.digest, pushed_at=change.pushed_at)
            )
        else:
            session.execute(delete(Tag).where(Tag.repository_id == repo_id, Tag.name == change.tag))
    session.flush()
    for repo_id in touched:  # a repository with no tag left is gone; if it returns, it is new
        if session.scalar(select(Tag.id).where(Tag.repository_id == repo_id).limit(1)) is None:
            session.execute(delete(Repository).where(Repository.id == repo_id))
