"""One poll of one registry: claim it, discover its repositories, then list, compare and commit each one.

The unit that is all or nothing is the repository (`watcher.polling.pipeline`, `watcher.polling.saving`): a repository
whose listing fails keeps its snapshot and emits nothing while the others commit, each with its events, and
the poll then fails naming it (`PartialPoll`); a failed catalog fails the whole poll with nothing changed.
The whole poll is bounded by the registry's deadline (`RegistrySpec.poll_timeout`) and by a stop request: repositories
committed before either stay committed, and the error says how many. The first poll of a registry to
complete records its baseline silently (unless `--emit-existing`); until one has, a repository new to the
snapshot is recorded silently too, while one already stored reports its changes.

A worker's poll of a registry with more than `WATCHER_FANOUT_REPOSITORIES` repositories is split into
chunks that every free worker lists (`watcher.polling.fanout`); it is still one poll, with one run, one lease and
one outcome, closed once every chunk is. `watcher poll NAME` lists every chunk in its own process.

Up to its first request to the registry a poll imports only what that request needs: it finds, claims and
records itself, and reads the stored repositories, in one transaction of SQLAlchemy Core
(`watcher.registrations.lookup`, `leases`, `runs`, `snapshot`), a bookkeeping commit
(`watcher.db.write_scope`): a steady poll is that transaction and the one that closes it. The ORM, what
commits a listing (`saving`, and the events and policies with it) and fan-out are imported once the
listing is under way (tests/cli/test_cli_imports.py), so `watcher poll` starts in little more than the
time its database, HTTP and Redis clients take to import.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine, update
from sqlalchemy.exc import SQLAlchemyError

from watcher.db import get_engine, session_scope, write_scope
from watcher.errors import RegistryError, StateError, WatcherError
from watcher.pollers import poller_for
from watcher.polling import leases, pipeline, runs
from watcher.polling.pipeline import PollTally
from watcher.polling.snapshot import Stored, drop_repositories, out_of_scope, stored_repositories
from watcher.registrations.lookup import StoredRegistry, find_row, spec_of
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec, format_interval
from watcher.registry.deadline import DeadlineExceeded, Interrupted, run_bounded
from watcher.runtime import heap
from watcher.runtime.shutdown import stop_on_signals

if TYPE_CHECKING:
    from watcher.models import Event
    from watcher.pollers.base import Poller
    from watcher.polling import fanout
    from watcher.polling.saving import Listed, Saved, Target

log = logging.getLogger("watcher")
#: how many failed repositories the one line of a partial poll names (all are counted)
NAMED_FAILURES = 5


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
    #: how long the poll took, from its claim to its last commit
    seconds: float = 0.0
    #: (repository, one-line cause) of each repository that failed; the others were saved
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: a poll split into chunks (`watcher.polling.fanout`): how many, how many this process listed, and the events
    #: other workers' chunks committed (counted, not in `events`)
    chunks: int = 0
    chunks_here: int = 0
    other_events: int = 0

    @property
    def event_count(self) -> int:
        return len(self.events) + self.other_events


class PartialPoll(WatcherError):
    """Some repositories failed; the others were saved and their events are in `result`."""

    def __init__(self, message: str, result: PollResult) -> None:
        super().__init__(message)
        self.result = result


def poll(
    name: str,
    *,
    engine: Engine | None = None,
    owner: str | None = None,
    stop: threading.Event | None = None,
    dispatch: fanout.Dispatch | None = None,
    trigger: runs.Trigger = "manual",
) -> PollResult:
    """Poll `name` once; with `dispatch` (a worker's poll), a big catalog is split into chunks that any free
    worker lists (`watcher.polling.fanout`), and without it this process lists them all. Raises Busy, NotFoundError,
    Interrupted (`stop` was set, or SIGTERM/SIGINT came), PartialPoll (some repositories failed, the others
    were saved), or a RegistryError such as DeadlineExceeded (the catalog, or every repository, failed; or
    the deadline passed): the run says why, and the message says what was saved before. Its run records
    `trigger` (beat's tick passes `schedule`)."""
    engine = engine or get_engine()
    owner = owner or leases.new_owner()
    started = time.monotonic()
    with stop_on_signals(stop) as stop_event:
        with write_scope(engine, bookkeeping=True) as connection:  # Core: no ORM before the first request
            row = find_row(connection, name)
            poll_id = PollId(row.id, name, row.provider, run_id=0, owner=owner, started=started)
            claimed = leases.claim(connection, row.id, owner)
            if claimed is None:
                raise Busy(f"registry {name!r} is being polled by another worker")
            taken_over = claimed is leases.Claimed.TAKEN_OVER
            poll_id.run_id = runs.start(connection, row.id, trigger, taken_over=taken_over)
            baselined = row.baselined
            stored = stored_repositories(connection, row.id)  # in the claim's transaction: no other to read it
        with leases.Heartbeat(engine, poll_id.registry_id, owner, name):
            made: list[Poller] = []
            tally = PollTally()
            try:
                spec = spec_of(row)  # credentials that cannot be decrypted fail this poll, named
                scope = Scope.from_options(spec.options)
                store = RegistryStore(engine, row, spec.url, scope, baselined or spec.emit_existing, stored)
                _bounded_poll(store, spec, stop_event, made, tally, poll_id, dispatch)
            except BaseException as exc:
                _say_what_was_saved(exc, tally)
                codes = (made[0].codes if made else Counter()) + tally.elsewhere.codes
                _finish_unsaved(engine, poll_id, codes, exc, tally)
                if isinstance(exc, Interrupted):
                    raise Interrupted(f"registry {name!r}: {exc}") from None
                if isinstance(exc, RegistryError):
                    exc.registry = name
                raise
            poller = made[0]
            for line in poller.ignored:
                log.warning("registry %r: %s", name, line)
            return _finish(engine, spec, poll_id, not baselined, poller, tally)


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


def _bounded_poll(
    store: RegistryStore,
    spec: RegistrySpec,
    stop: threading.Event,
    made: list[Poller],
    tally: PollTally,
    poll_id: PollId,
    dispatch: fanout.Dispatch | None,
) -> None:
    """The pipeline to its deadline or a stop request; then the writer thread is waited for (and the chunks
    of a split poll closed), so `tally` says exactly what was committed, whichever way the poll ended."""
    engine = store.engine
    seconds = spec.poll_timeout()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watcher-writer")
    split = None
    if dispatch is not None:
        from watcher.polling import fanout  # a worker's poll only (`watcher poll` lists every chunk itself)

        deadline = time.time() + seconds
        split = fanout.Coordinator(
            engine, store.target, poll_id.run_id, poll_id.owner, dispatch, writer, tally, deadline
        )
    try:
        run_bounded(
            lambda: _run(spec, made, store, writer, tally, split),
            seconds=seconds,
            stop=stop,
            deadline_message=f"the poll exceeded its {_duration(seconds)} deadline (--poll-timeout)",
        )
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
        if split is not None:
            split.close()


def _duration(seconds: float) -> str:
    return format_interval(int(seconds)) if seconds == int(seconds) else f"{seconds:g}s"


async def _run(
    spec: RegistrySpec,
    made: list[Poller],
    store: RegistryStore,
    writer: ThreadPoolExecutor,
    tally: PollTally,
    split: pipeline.Split | None,
) -> None:
    """The pipeline; the poller goes into `made` so that a failed poll's requests are counted too."""
    poller = poller_for(spec)
    heap.settle()  # what the process imported, the poller's SDK included, is never scanned again
    made.append(poller)
    try:
        await pipeline.run(poller, store.scope, store, writer, tally, split)
    finally:
        await poller.aclose()


@dataclass
class RegistryStore:
    """The pipeline's database side for one registry (`pipeline.Store`). Its `target` (and with it what
    commits a listing: `watcher.polling.saving`) is first needed after the poll's first request."""

    engine: Engine
    registry: StoredRegistry
    url: str
    scope: Scope
    #: the registry is past its baseline (or emits existing tags): a new repository's tags are `added`
    emit_new: bool
    #: the stored repositories, as read in the transaction that claimed the registry (None: read them here)
    claimed: dict[str, Stored] | None = None

    @cached_property
    def target(self) -> Target:
        from watcher.polling.saving import Target

        return Target.of(self.registry, self.url, self.scope, self.emit_new)

    def stored(self) -> dict[str, Stored]:
        found, self.claimed = self.claimed, None
        if found is None:
            with self.engine.begin() as connection:  # Core: a poll of named repositories reads this first
                found = stored_repositories(connection, self.registry.id)
        unwanted = out_of_scope(found, self.scope)
        if unwanted:
            with self.engine.begin() as connection:
                drop_repositories(connection, self.registry.id, unwanted)
        dropped = set(unwanted)
        return {name: stored for name, stored in found.items() if name not in dropped}

    def save(self, group: list[Listed]) -> list[Saved]:
        from watcher.polling import saving

        return saving.save(self.engine, self.target, group)


def _say_what_was_saved(exc: BaseException, tally: PollTally) -> None:
    """A poll cut short after some repositories committed says so: they stay committed."""
    if not tally.saved:
        return
    saved = f"{tally.done} of {tally.total} repositories were saved before it, the others were not"
    if isinstance(exc, DeadlineExceeded):
        exc.message = f"{exc.message}; {saved}"
    elif isinstance(exc, Interrupted):
        exc.args = (str(exc).replace("nothing was saved", saved),)


def _finish_unsaved(engine: Engine, poll_id: PollId, codes: Counter[str], exc: BaseException, tally: PollTally) -> None:
    """Close the run of a poll that did not finish, count it, and give the registry back."""
    from watcher.read import counters, pollmetrics

    outcome = "abandoned" if isinstance(exc, Interrupted | KeyboardInterrupt) else "failed"
    error = str(exc) if isinstance(exc, WatcherError) else f"{type(exc).__name__}: {exc}"
    increments = pollmetrics.finished(poll_id.name, poll_id.provider, outcome, poll_id.seconds(), codes)
    try:
        with session_scope(engine) as session:
            runs.finish(
                session,
                poll_id.run_id,
                outcome,
                error=error.splitlines()[0] if error else outcome,
                repositories=tally.repositories,
                tags=tally.tags,
                events=len(tally.events) + tally.elsewhere.events,
            )
            counters.add(session, increments)
            leases.release(session, poll_id.registry_id, poll_id.owner)
    except (SQLAlchemyError, StateError) as db_error:  # the lease lapses on its own; say why the run stays open
        log.warning(
            "registry %r: poll run %d not closed: %s", poll_id.name, poll_id.run_id, str(db_error).splitlines()[0]
        )


def _finish(
    engine: Engine, spec: RegistrySpec, poll_id: PollId, baseline: bool, poller: Poller, tally: PollTally
) -> PollResult:
    """Close the run of a poll that went through every repository: `ok`, or `failed` naming the repositories
    that failed. Only a poll with none failed completes the registry's baseline."""
    from watcher.models import Registry
    from watcher.read import counters, pollmetrics

    elsewhere = tally.elsewhere
    result = PollResult(
        registry=spec.name,
        baseline=baseline,
        repositories=tally.repositories,
        tags=tally.tags,
        requests=poller.requests + elsewhere.requests,
        events=tally.events,
        ignored=poller.ignored_count + elsewhere.ignored,
        seconds=poll_id.seconds(),
        failures=sorted(tally.failures),
        chunks=elsewhere.chunks,
        chunks_here=elsewhere.here,
        other_events=elsewhere.events,
    )
    error = _failures_line(result.failures, tally.total)
    if tally.first_error is not None and not tally.done and len(tally.failures) == tally.total:
        error = str(tally.first_error)  # every repository failed: the registry's failure, as from its catalog
    outcome = "failed" if result.failures else "ok"
    baselined = not result.failures and baseline
    with session_scope(engine, bookkeeping=not baselined) as session:  # its events were committed durably
        if baselined:
            session.execute(update(Registry).where(Registry.id == poll_id.registry_id).values(baselined=True))
        codes = poller.codes + elsewhere.codes
        counters.add(session, pollmetrics.finished(spec.key, spec.provider, outcome, result.seconds, codes))
        runs.finish(
            session,
            poll_id.run_id,
            outcome,
            error=error.splitlines()[0] if error else "",
            repositories=result.repositories,
            tags=result.tags,
            events=result.event_count,
            requests=result.requests,
            ignored=result.ignored,
        )
        leases.release(session, poll_id.registry_id, poll_id.owner)
    if tally.first_error is not None and error == str(tally.first_error):
        tally.first_error.registry = spec.name
        raise tally.first_error
    if result.failures:
        raise PartialPoll(f"registry {spec.name!r}: {error}", result)
    return result


def _failures_line(failures: list[tuple[str, str]], total: int) -> str:
    """`2 of 40 repositories failed: team/a (unreachable: ...), team/b (...); the others were saved`."""
    if not failures:
        return ""
    named = ", ".join(f"{repo} ({cause})" for repo, cause in failures[:NAMED_FAILURES])
    more = f" and {len(failures) - NAMED_FAILURES} more" if len(failures) > NAMED_FAILURES else ""
    return f"{len(failures)} of {total} repositories failed: {named}{more}; the others were saved"
