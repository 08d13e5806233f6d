"""One poll of one registry: claim it, list it, diff against the snapshot, commit snapshot and events.

The listing happens outside any transaction, bounded by the registry's deadline (`poll_timeout`) and by
a stop request; the new snapshot and the events it implies are written in one transaction that also
bumps the registry's revision, so two pollers can never both commit against the same snapshot, and a
failed, timed-out, interrupted or partial listing commits nothing at all.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from watcher import counters, leases, pollmetrics, runs
from watcher.bounded import Interrupted, run_bounded
from watcher.db import get_engine, session_scope
from watcher.diff import Change, ChangeKind, Listing, TagState, diff
from watcher.errors import InputError, RegistryError, StateError, WatcherError
from watcher.events import new_event
from watcher.models import Event, Registry, Repository, Tag, utcnow
from watcher.pollers import poller_for
from watcher.pollers.base import Poller
from watcher.registries import find, spec_of
from watcher.scope import Scope
from watcher.shutdown import stop_on_signals
from watcher.spec import DEFAULT_POLL_TIMEOUT_SECONDS, RegistrySpec, format_interval

log = logging.getLogger("watcher")


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
    #: names the registry sent that are not valid OCI names, left out of the snapshot
    ignored: int = 0
    #: how long the poll took, from its claim to its commit
    seconds: float = 0.0


@dataclass
class Listed:
    """What one bounded listing brought back."""

    listing: Listing
    requests: int
    #: the requests by HTTP status (or `error`)
    codes: Counter[str]
    #: how many names the registry sent were left out, and the first lines saying which
    ignored: int
    ignored_lines: list[str]


def poll(
    name: str, *, engine: Engine | None = None, owner: str | None = None, stop: threading.Event | None = None
) -> PollResult:
    """Poll `name` once. Raises Busy, NotFoundError, Interrupted (`stop` was set, or SIGTERM/SIGINT came),
    or a RegistryError such as DeadlineExceeded: then nothing changed and the run says why."""
    engine = engine or get_engine()
    owner = owner or leases.new_owner()
    started = time.monotonic()
    with stop_on_signals(stop) as stop_event:
        with session_scope(engine) as session:
            row = find(session, name)
            poll_id = PollId(row.id, name, row.provider, run_id=0, owner=owner, started=started)
            if not leases.claim(session, row.id, owner):
                raise Busy(f"registry {name!r} is being polled by another worker")
            poll_id.run_id = runs.start(session, row.id)
            revision = row.revision
        with leases.Heartbeat(engine, poll_id.registry_id, owner, name):
            made: list[Poller] = []
            try:
                spec = spec_of(row)  # credentials that cannot be decrypted fail this poll, named
                listed = _bounded_listing(spec, stop_event, made)
                for line in listed.ignored_lines:
                    log.warning("registry %r: %s", name, line)
                return _commit(engine, spec, poll_id, revision, listed)
            except BaseException as exc:
                _finish_unsaved(engine, poll_id, made[0].codes if made else Counter(), exc)
                if isinstance(exc, Interrupted):
                    raise Interrupted(f"registry {name!r}: {exc}") from None
                if isinstance(exc, RegistryError):
                    exc.registry = name
                raise


@dataclass
class PollId:
    """Which poll this is: its registry, its run, its lease and when it started."""

    registry_id: int
    name: str
    provider: str
    run_id: int
    owner: str
    started: float

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _bounded_listing(spec: RegistrySpec, stop: threading.Event, made: list[Poller]) -> Listed:
    seconds = poll_timeout(spec)
    return run_bounded(
        lambda: _list(spec, made),
        seconds=seconds,
        stop=stop,
        deadline_message=f"the poll exceeded its {_duration(seconds)} deadline (--poll-timeout)",
    )


def poll_timeout(spec: RegistrySpec) -> float:
    """The registry's `poll_timeout` option in seconds; a stored value that is not one fails its poll."""
    value = spec.options.get("poll_timeout")
    if value is None:
        return DEFAULT_POLL_TIMEOUT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InputError(
            f"registry {spec.name!r}: option poll_timeout {value!r} is not a number of seconds: "
            "set it with `--poll-timeout` (`watcher registry apply`)"
        )
    return float(value)


def _duration(seconds: float) -> str:
    return format_interval(int(seconds)) if seconds == int(seconds) else f"{seconds:g}s"


async def _list(spec: RegistrySpec, made: list[Poller]) -> Listed:
    """The listing; the poller goes into `made` so that a failed poll's requests are counted too."""
    poller = poller_for(spec)
    made.append(poller)
    try:
        listing = await poller.listing(Scope.from_options(spec.options))
        return Listed(listing, poller.requests, poller.codes, poller.ignored_count, list(poller.ignored))
    finally:
        await poller.aclose()


def _finish_unsaved(engine: Engine, poll_id: PollId, codes: Counter[str], exc: BaseException) -> None:
    """Close the run of a poll that saved nothing, count it, and give the registry back."""
    outcome = "abandoned" if isinstance(exc, Interrupted | KeyboardInterrupt) else "failed"
    error = str(exc) if isinstance(exc, WatcherError) else f"{type(exc).__name__}: {exc}"
    increments = pollmetrics.finished(poll_id.name, poll_id.provider, outcome, poll_id.seconds(), codes)
    try:
        with session_scope(engine) as session:
            runs.finish(session, poll_id.run_id, outcome, error=error.splitlines()[0] if error else outcome)
            counters.add(session, increments)
            leases.release(session, poll_id.registry_id, poll_id.owner)
    except (SQLAlchemyError, StateError) as db_error:  # the lease lapses on its own; say why the run stays open
        log.warning(
            "registry %r: poll run %d not closed: %s", poll_id.name, poll_id.run_id, str(db_error).splitlines()[0]
        )


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


def _commit(engine: Engine, spec: RegistrySpec, poll_id: PollId, revision: int, listed: Listed) -> PollResult:
    registry_id = poll_id.registry_id
    detected_at = utcnow()
    listing = listed.listing
    with session_scope(engine) as session:
        row = session.get(Registry, registry_id)
        if row is None:
            raise StateError(f"registry {spec.name!r} was removed during the poll; nothing was saved")
        baseline = not row.baselined
        bumped = session.execute(
            update(Registry)
            .where(Registry.id == registry_id, Registry.revision == revision)
            .values(revision=revision + 1, baselined=True)
        )
        if not bumped.rowcount:  # type: ignore[attr-defined]
            raise Busy(f"registry {spec.name!r} was polled by another worker meanwhile; nothing was saved")
        leases.release(session, registry_id, poll_id.owner)
        stored, repo_ids = load_snapshot(session, registry_id)
        scope = Scope.from_options(spec.options)
        _drop_out_of_scope(session, stored, repo_ids, scope)
        changes = diff(scope.restrict(stored), listing)
        _write_snapshot(session, registry_id, repo_ids, changes, detected_at)
        events: list[Event] = []
        if not baseline or spec.emit_existing:
            events = [new_event(registry_id, spec.name, spec.url, c, detected_at) for c in changes]
            session.add_all(events)
        result = PollResult(
            registry=spec.name,
            baseline=baseline,
            repositories=len(listing),
            tags=sum(len(t) for t in listing.values()),
            requests=listed.requests,
            events=events,
            ignored=listed.ignored,
            seconds=poll_id.seconds(),
        )
        counters.add(
            session,
            pollmetrics.finished(
                spec.name, spec.provider, "ok", result.seconds, listed.codes, (e.change for e in events)
            ),
        )
        runs.finish(
            session,
            poll_id.run_id,
            "ok",
            repositories=result.repositories,
            tags=result.tags,
            events=len(events),
            requests=result.requests,
            ignored=result.ignored,
        )
    return result


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
