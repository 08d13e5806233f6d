"""A poll of one repository: list it, diff it against its stored tags, commit it as a full poll would.

It is what a webhook triggers. It takes no lease: each repository's commit is a compare-and-set on its
revision (`watcher.polling.saving`), so it runs safely beside a full poll of the registry or another poll of the
same repository. When another poll committed the repository after this one read it, this one reads and
lists it again (up to ATTEMPTS times): its listing is never diffed against a newer snapshot. A repository
outside the registry's scope is ignored (no run recorded: nothing was listed); one the registry does not
have (any more) has its tags removed. Each poll is a run in the registry's poll history, trigger `webhook`,
naming the repository it listed; it does not count for the registry's health (`watcher.polling.runs`).
Its new digests' image metadata is read through its own poller before it commits, as a full poll's is.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from sqlalchemy import Engine, select

from watcher.db import get_engine, session_scope
from watcher.errors import InputError, WatcherError
from watcher.models import Event, Repository
from watcher.pollers import poller_for
from watcher.polling import images, runs
from watcher.polling.leases import lease_length
from watcher.polling.saving import Listed, Saved, Target, save
from watcher.polling.snapshot import Stored, fingerprint
from watcher.read import counters, pollmetrics
from watcher.registrations.scope import Scope
from watcher.registrations.spec import DEFAULT_POLL_TIMEOUT_SECONDS, RegistrySpec
from watcher.registrations.store import find, spec_of
from watcher.registry.deadline import Interrupted, run_bounded
from watcher.registry.reference import repository_problem
from watcher.runtime.shutdown import stop_on_signals

log = logging.getLogger("watcher")
#: how many times a repository another poll keeps committing meanwhile is read and listed again
ATTEMPTS = 3


@dataclass
class RepositoryPoll:
    """What one repository poll did: `in_scope` False when the repository is not watched (nothing listed)."""

    registry: str
    repository: str
    in_scope: bool = True
    tags: int = 0
    #: the tags the listing showed (in scope)
    listed: frozenset[str] = frozenset()
    requests: int = 0
    #: the requests sent, by HTTP status (or `error`), failed listings' included: counted as a poll's are
    codes: Counter[str] = field(default_factory=Counter)
    events: list[Event] = field(default_factory=list)
    #: why the repository was not saved (another poll kept committing it), or ""
    conflict: str = ""


def poll_repository(
    name: str,
    repository: str,
    *,
    engine: Engine | None = None,
    stop: threading.Event | None = None,
    trigger: runs.Trigger = "webhook",
) -> RepositoryPoll:
    """List `repository` of registry `name` and commit what changed, recorded as a run. Raises
    NotFoundError, InputError (not a valid repository name, or a bad option) or the listing's RegistryError
    (nothing saved; the run says why)."""
    problem = repository_problem(repository)
    if problem is not None:
        raise InputError(f"registry {name!r}: {repository[:200]!r} is not a valid OCI repository name: it {problem}")
    engine = engine or get_engine()
    with session_scope(engine) as session:
        row = find(session, name)
        registry_id, baselined = row.id, row.baselined
        spec = spec_of(row)
    scope = Scope.from_options(spec.options)
    result = RepositoryPoll(name, repository)
    if not scope.wants_repository(repository):
        result.in_scope = False
        return result
    with session_scope(engine) as session:
        run_id = runs.start_repositories(
            session, registry_id, [repository], trigger, lapses_after=_longest(spec) + lease_length()
        )
    try:
        _poll(engine, Target.of(row, spec.url, scope, baselined or spec.emit_existing), spec, result, stop)
    except BaseException as exc:
        outcome = "abandoned" if isinstance(exc, Interrupted | KeyboardInterrupt) else "failed"
        error = str(exc) if isinstance(exc, WatcherError) else f"{type(exc).__name__}: {exc}"
        _finish(engine, run_id, spec, result, outcome, error)
        raise
    _finish(engine, run_id, spec, result, "failed" if result.conflict else "ok", result.conflict)
    return result


def _poll(
    engine: Engine, target: Target, spec: RegistrySpec, result: RepositoryPoll, stop: threading.Event | None
) -> None:
    """List and commit, again while another poll keeps committing the repository meanwhile (`result.conflict`
    says so when it still did after ATTEMPTS)."""
    repository = result.repository
    for _ in range(ATTEMPTS):
        stored = _stored(engine, target.registry_id, repository)
        with stop_on_signals(stop) as stop_event:
            item, requests = run_bounded(
                partial(_list, engine, target, spec, repository, stored, result),
                seconds=spec.poll_timeout(),
                stop=stop_event,
                deadline_message=f"listing {repository} exceeded its deadline (--poll-timeout)",
            )
        result.requests += requests
        if item is None:
            return
        saved: Saved = save(engine, target, [item])[0]
        result.events, result.conflict = saved.events, saved.conflict
        if not saved.conflict:
            return
    log.info("registry %r: %s: %s", target.key, repository, result.conflict)


def _longest(spec: RegistrySpec) -> timedelta:
    """How long a repository poll may run at most (its deadline for each attempt): past that, its run is dead."""
    try:
        seconds = spec.poll_timeout()
    except InputError:  # the poll fails on it, and says so in its run
        seconds = DEFAULT_POLL_TIMEOUT_SECONDS
    return timedelta(seconds=ATTEMPTS * seconds)


def _finish(engine: Engine, run_id: int, spec: RegistrySpec, result: RepositoryPoll, outcome: str, error: str) -> None:
    """Close the run, and count its requests in `watcher_registry_requests_total` in the same transaction."""
    with session_scope(engine) as session:
        counters.add(session, pollmetrics.requests(spec.key, spec.provider, result.codes))
        runs.finish(
            session,
            run_id,
            outcome,
            error=error.splitlines()[0] if error else "",
            repositories=1,
            tags=result.tags,
            events=len(result.events),
            requests=result.requests,
        )


def _stored(engine: Engine, registry_id: int, repository: str) -> Stored | None:
    with session_scope(engine) as session:
        row = session.execute(
            select(Repository.id, Repository.fingerprint, Repository.revision).where(
                Repository.registry_id == registry_id, Repository.name == repository
            )
        ).first()
    return None if row is None else Stored(row.id, row.fingerprint, row.revision)


async def _list(
    engine: Engine, target: Target, spec: RegistrySpec, repository: str, stored: Stored | None, result: RepositoryPoll
) -> tuple[Listed | None, int]:
    """The repository listed (None: unchanged) with its new digests' image metadata read through the same
    poller (`watcher.polling.images.describe`), and the number of requests sent; `result` is given the tags
    listed and every request's status."""
    poller = poller_for(spec)
    try:
        await poller.prepare()
        tags = await poller.repository_tags(repository, target.scope)
        result.tags, result.listed = len(tags), frozenset(tags)
        listed = fingerprint(tags)
        if (stored is None and not tags) or (stored is not None and stored.fingerprint == listed):
            return None, poller.requests
        item = Listed(repository, tags, listed, stored)
        await images.describe(poller, engine, target, [item], None)
        return item, poller.requests
    finally:
        result.codes.update(poller.codes)
        await poller.aclose()
