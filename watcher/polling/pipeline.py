"""A poll's repositories: listed a few at a time, each compared by fingerprint, committed in groups.

Memory stays bounded by the largest repository, not by the registry: at most `workers` repositories are
listed at once (the host's concurrency limit: listing more at once would only queue their requests), a
repository whose fingerprint matches the stored one is forgotten as soon as it is listed, and a changed one
waits in a buffer of at most CHUNK_TAGS tags (or one bigger repository) until the writer takes the buffer
as one group and commits it (`watcher.polling.saving`): once the buffer is full, the listing done, or its first
repository has waited GROUP_SECONDS, so a small registry's changes commit in one transaction. The writer is
one thread of the poll's own, so listing goes on while a group commits; it records what it committed itself,
so a poll cut short by its deadline or a stop request still knows exactly which repositories were saved.

A repository whose listing fails is recorded as failed and left as stored; the others carry on. A failed
catalog fails the whole poll before anything is read or written.

Before the writer commits a group, the digests its events will name as new and `images` does not know are
read with the poll's own client (`watcher.polling.images.describe`), so the events carry their metadata; a
steady poll has no group, and so asks nothing more.

What commits (`saving`, `images`, and the ORM with them) is imported once a repository has changed, not
before the poll's first request (`watcher.polling.poll`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from watcher.errors import RegistryError
from watcher.pollers.base import Poller, first_error
from watcher.polling.snapshot import Stored, fingerprint
from watcher.registrations.scope import Scope

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from watcher.diff import TagState
    from watcher.models import Event
    from watcher.polling.saving import Listed, Saved, Target

#: at most this many repositories, or this many tags (or one repository with more), commit together
CHUNK_REPOSITORIES = 1000
CHUNK_TAGS = 10_000
#: the writer takes a group once its first repository has waited this long (or the buffer is full, or the
#: listing is done): a small registry's changed repositories commit together, in one transaction, instead
#: of one transaction each as they are listed (a baseline of 10 repositories made ~7 commits)
GROUP_SECONDS = 0.25


class Store(Protocol):
    """The database side of a poll; both calls run on the writer thread."""

    engine: Engine

    @property
    def target(self) -> Target: ...

    def stored(self) -> dict[str, Stored]:
        """The stored repositories in scope (those out of scope are dropped first)."""
        ...

    def save(self, group: list[Listed]) -> list[Saved]: ...


@dataclass
class PollTally:
    """What a poll did so far, repository by repository (the loop and the writer thread both add to it)."""

    #: repositories to do: those the catalog names, and those stored that it no longer names
    total: int = 0
    #: repositories listed with at least one tag in scope, and their tags
    repositories: int = 0
    tags: int = 0
    #: repositories found as stored (nothing read or written), and repositories whose changes committed
    unchanged: int = 0
    saved: int = 0
    events: list[Event] = field(default_factory=list)
    #: (repository, one-line cause) of each repository that failed
    failures: list[tuple[str, str]] = field(default_factory=list)
    first_error: RegistryError | None = None
    #: a fanned-out poll (`watcher.polling.fanout`): what other workers did, counted but not held here
    elsewhere: Elsewhere = field(default_factory=lambda: Elsewhere())
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def done(self) -> int:
        return self.unchanged + self.saved

    def failed(self, repository: str, exc: RegistryError) -> None:
        with self._lock:
            self.failures.append((repository, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            self.first_error = self.first_error or exc

    def record(self, saved: list[Saved]) -> None:
        with self._lock:
            for one in saved:
                if one.conflict:
                    self.failures.append((one.repository, one.conflict))
                else:
                    self.saved += 1
                    self.events += one.events


@dataclass
class Elsewhere:
    """What the chunks of a fanned-out poll listed by other workers did: events, requests and ignored
    names (theirs), and how many chunks there were (`chunks`) and how many this process listed (`here`)."""

    events: int = 0
    requests: int = 0
    ignored: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    chunks: int = 0
    here: int = 0


class Buffer:
    """Listed repositories waiting for the writer: at most CHUNK_TAGS tags, or one repository of any size."""

    def __init__(self) -> None:
        self._items: list[tuple[Listed, int]] = []
        self._size = 0
        self._closed = False
        #: puts waiting for room, and when the oldest item waiting came
        self._stalled = 0
        self._since = 0.0
        self._changed = asyncio.Condition()

    async def put(self, item: Listed) -> None:
        size = len(item.tags) + 1
        async with self._changed:
            if self._items and self._size + size > CHUNK_TAGS:
                self._stalled += 1
                self._changed.notify_all()
                try:
                    await self._changed.wait_for(lambda: not self._items or self._size + size <= CHUNK_TAGS)
                finally:
                    self._stalled -= 1
            if not self._items:
                self._since = asyncio.get_running_loop().time()
            self._items.append((item, size))
            self._size += size
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def take(self) -> list[Listed] | None:
        """The next group (everything waiting, up to CHUNK_REPOSITORIES), once the first of it has waited
        GROUP_SECONDS, the buffer is full or closed; None once closed and empty."""
        loop = asyncio.get_running_loop()
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items) or self._closed)
            while not self._closed and not self._stalled and len(self._items) < CHUNK_REPOSITORIES:
                left = self._since + GROUP_SECONDS - loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
            taken, self._items = self._items[:CHUNK_REPOSITORIES], self._items[CHUNK_REPOSITORIES:]
            self._size -= sum(size for _, size in taken)
            self._changed.notify_all()
            return [item for item, _ in taken] or None


class Split(Protocol):
    """Hands a big registry's repositories to other workers (`watcher.polling.fanout`)."""

    async def __call__(self, poller: Poller, names: list[str], gone: list[str]) -> bool:
        """True when the repositories were listed and committed that way and `tally` says so; False to
        list them here."""
        ...


async def run(
    poller: Poller, scope: Scope, store: Store, writer: Executor, tally: PollTally, split: Split | None = None
) -> None:
    """Discover, then list, compare and commit every repository (or hand them to `split`); a RegistryError
    from the catalog (or any other error) fails the poll, one from a repository's listing only that
    repository."""
    loop = asyncio.get_running_loop()
    await poller.prepare()
    names = await poller.discover(scope)
    stored = await loop.run_in_executor(writer, store.stored)
    gone = sorted(set(stored) - set(names))  # a complete catalog no longer names them: their tags are removed
    tally.total = len(names) + len(gone)
    if split is not None and await split(poller, names, gone):
        return
    await list_repositories(poller, scope, names, gone, stored, store, writer, tally)


async def list_repositories(
    poller: Poller,
    scope: Scope,
    names: list[str],
    gone: list[str],
    stored: dict[str, Stored],
    store: Store,
    writer: Executor,
    tally: PollTally,
) -> None:
    """List `names` a few at a time and commit what changed, with the removal of `gone` (stored, no longer
    in the catalog); a whole poll's repositories, or one chunk of them."""
    loop = asyncio.get_running_loop()
    buffer = Buffer()

    async def write() -> None:
        while (group := await buffer.take()) is not None:
            from watcher.polling import images  # once there is something to commit

            await images.describe(poller, store.engine, store.target, group, writer)
            tally.record(await loop.run_in_executor(writer, store.save, group))

    async def list_all() -> None:
        for name in gone:
            await buffer.put(_listed(name, {}, fingerprint({}), stored[name]))
        queue = iter(names)
        async with asyncio.TaskGroup() as listers:
            for _ in range(max(1, min(poller.limits.max_concurrency, len(names)))):
                listers.create_task(_lister(poller, scope, queue, stored, buffer, tally))
        await buffer.close()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(write())
            group.create_task(list_all())
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None


async def _lister(
    poller: Poller, scope: Scope, queue: Iterator[str], stored: dict[str, Stored], buffer: Buffer, tally: PollTally
) -> None:
    """List repositories one after another from the shared queue until it is empty."""
    for name in queue:
        try:
            tags = await poller.repository_tags(name, scope)
        except RegistryError as exc:
            tally.failed(name, exc)
            continue
        if tags:
            tally.repositories += 1
            tally.tags += len(tags)
        before = stored.get(name)
        listed = fingerprint(tags)
        if (before is None and not tags) or (before is not None and before.fingerprint == listed):
            tally.unchanged += 1
            poller.forget([name])  # nothing of it is described
            continue
        await buffer.put(_listed(name, tags, listed, before))


def _listed(name: str, tags: dict[str, TagState], listed: str, before: Stored | None) -> Listed:
    """A changed repository, for the writer; what commits it (and the ORM) is imported with the first one."""
    from watcher.polling.saving import Listed

    return Listed(name, tags, listed, before)
