"""The baseline's digests, described in the background at a bounded rate (`watcher.fill_images`, every few
seconds), so that a baseline of 100,000 tags is not slowed by reading 100,000 manifests.

Each run takes a Redis lock (one run at a time in the deployment), asks the database one cheap question —
each registry's count of repositories and sum of their revisions, which any commit changes — and looks
only at the registries whose snapshot changed since their last pass, whose pass is under way, or whose
last pass left digests it could not read (tried again after RETRY_SECONDS). A pass walks a registry's tag
rows in id order from a cursor, PER_REGISTRY digests that `images` lacks (one indexed anti-join, LIMIT) a
run; registries take turns, the least recently served first, at most PER_RUN digests a run. A registry
being polled (its lease held) is left alone that run: its poll has the host's limits to itself; and no run
reads anything while polls are late (`polls_late`): the fill takes only what the pool has to spare. Digests
are read through the registry's own poller client (`watcher.polling.images`), within its host limits; a
provider's own API is asked first (`Poller.said`: ECR's DescribeImages by digest, ACR's manifest
properties); a provider with no OCI client (ECR, ACR with Azure AD) reads nothing more, and its pass skips
what it said already. When nothing is missing a run costs that one GROUP BY query and one Redis read.

A `newest-build` policy ranks by creation time, which the fill may store after the policy was evaluated:
once a registry's digests are stored, the newest-build policies watching repositories that serve them are
evaluated again in one transaction (`watcher.policies.evaluation.reevaluate_described`), and a selection
that changed writes its `selected` event to the outbox, exactly as a poll's commit would. No such policy:
one indexed query, nothing more.

The state (cursor, the snapshot's signature the pass started from, whether digests failed, when the
registry was last served) lives in one Redis hash; lost, every registry is walked once more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from watcher import schema
from watcher.db import session_scope
from watcher.errors import WatcherError
from watcher.models import Registry, utcnow
from watcher.outbox.events import event_rows
from watcher.policies.evaluation import reevaluate_described
from watcher.pollers import poller_for
from watcher.polling.images import fetch_all, store, store_said
from watcher.read.model import deployment_lag
from watcher.registrations.keys import registry_key
from watcher.registrations.store import spec_of
from watcher.registry.deadline import run_bounded
from watcher.registry.imagemeta import ImageMeta
from watcher.settings import get_settings

if TYPE_CHECKING:
    import redis
    from sqlalchemy import Engine

    from watcher.pollers.base import Poller

log = logging.getLogger("watcher")
#: digests one registry has read a run, and all registries together
PER_REGISTRY = 32
PER_RUN = 256
#: digests read at once for one registry (its host limits hold them too)
CONCURRENCY = 4
#: a pass that left digests unread walks the registry again after this long, even if nothing changed
RETRY_SECONDS = 3600
#: a run's deadline, and how long its lock is held at most
DEADLINE_SECONDS = 60
LOCK_SECONDS = 90
#: a run is skipped while a due poll has waited longer than this to start: a pool with room to spare starts
#: one within a tick or two (`watcher.tasks.app.TICK_SECONDS`, 1 s). Not the schedule's lag target (5 s): a
#: fill yielding only there kept the lag at it, and past it by a run's length, for as long as it had digests
#: to read (the 30,000 of 1,000 registries' baselines: ten minutes and more)
YIELD_LAG_SECONDS = 2.0


@dataclass
class Filled:
    """What one run did."""

    registries: int = 0
    stored: int = 0
    failed: int = 0
    requests: int = 0
    skipped: bool = False
    #: `selected` events written: newest-build policies whose selection the stored creation times changed
    selected: int = 0


@dataclass
class Pass:
    """One registry's walk over its tag rows."""

    cursor: int = 0
    signature: str = ""
    done: bool = False
    failed: bool = False
    retry_at: float = 0.0
    served: float = 0.0

    @classmethod
    def read(cls, raw: str | bytes | None) -> Pass | None:
        if raw is None:
            return None
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def due(self, signature: str, now: float) -> bool:
        if not self.done:
            return True
        return self.signature != signature or (self.failed and now >= self.retry_at)


@dataclass
class Work:
    """One registry's digests to read this run: digest -> a repository serving it, and the last row's id."""

    registry_id: int
    key: str
    poller: Poller
    wanted: dict[str, str] = field(default_factory=dict)
    last_id: int = 0
    complete: bool = False
    #: some of `wanted` could not be read
    failed: bool = False


def state_key() -> str:
    return f"{get_settings().events_stream}:images:fill"


def fill(engine: Engine, client: redis.Redis, *, per_registry: int = PER_REGISTRY, per_run: int = PER_RUN) -> Filled:
    """One run: the digests of registries that need it read and stored (see above); none while polls are
    late (`polls_late`)."""
    if polls_late(engine):
        return Filled(skipped=True)
    lock = f"{state_key()}:lock"
    token = secrets.token_hex(8)
    if not client.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return Filled(skipped=True)
    try:
        return _run(engine, client, per_registry, per_run)
    finally:
        if client.get(lock) in (token, token.encode()):
            client.delete(lock)


def polls_late(engine: Engine) -> bool:
    """Whether a due poll has waited over YIELD_LAG_SECONDS to start: the fill only uses what the pool has
    to spare, since a run holds a pool process for seconds (1,000 registries' baselines left 30,000
    digests to fill, and the pool, filling them, completed half the polls due)."""
    with engine.connect() as conn:
        return deployment_lag(conn) > YIELD_LAG_SECONDS


def _run(engine: Engine, client: redis.Redis, per_registry: int, per_run: int) -> Filled:
    now = time.time()
    raw: dict[Any, Any] = client.hgetall(state_key())
    passes = {int(k): p for k, v in raw.items() if (p := Pass.read(v)) is not None}
    signatures = _signatures(engine)
    for gone in set(passes) - set(signatures):
        client.hdel(state_key(), str(gone))
    due = [rid for rid, sig in signatures.items() if rid not in passes or passes[rid].due(sig, now)]
    due.sort(key=lambda rid: passes[rid].served if rid in passes else 0.0)
    due = due[: max(1, per_run // max(1, per_registry))]
    filled = Filled()
    if not due:
        return filled
    works = _plan(engine, due, passes, per_registry)
    if works:
        filled = run_bounded(
            lambda: _read(engine, works),
            seconds=DEADLINE_SECONDS,
            stop=threading.Event(),
            deadline_message="the image metadata fill exceeded its deadline",
        )
    for work in works:
        state = passes.get(work.registry_id) or Pass()
        if state.done or not state.signature:
            state = Pass(signature=signatures[work.registry_id])
        state.failed = state.failed or work.failed
        state.cursor, state.served = (0, now) if work.complete else (work.last_id, now)
        state.done = work.complete
        state.retry_at = now + RETRY_SECONDS
        client.hset(state_key(), str(work.registry_id), json.dumps(state.__dict__))
    return filled


def _signatures(engine: Engine) -> dict[int, str]:
    """Each registry's count of repositories and sum of their revisions: any commit changes it."""
    repos = schema.repositories.c
    query = select(repos.registry_id, func.count(), func.coalesce(func.sum(repos.revision), 0)).group_by(
        repos.registry_id
    )
    with engine.connect() as conn:
        return {rid: f"{count}:{total}" for rid, count, total in conn.execute(query)}


def _plan(engine: Engine, due: list[int], passes: dict[int, Pass], per_registry: int) -> list[Work]:
    """The due registries not being polled, each with its next digests that `images` lacks; a registry
    whose provider has no OCI client ends its pass here."""
    works: list[Work] = []
    with session_scope(engine) as session:
        rows = session.scalars(select(Registry).where(Registry.id.in_(due))).all()
        for row in sorted(rows, key=lambda r: due.index(r.id)):
            if row.lease_until is not None and row.lease_until > utcnow():
                continue  # its poll has the host to itself
            key = registry_key(row.workspace, row.name)
            try:
                poller = poller_for(spec_of(row))
            except WatcherError as exc:
                log.warning("registry %r: image metadata not filled: %s", key, str(exc).splitlines()[0])
                continue
            work = Work(row.id, key, poller)
            state = passes.get(row.id)
            cursor = state.cursor if state is not None and not state.done else 0
            _missing(session, work, cursor, per_registry, only_unsaid=poller.manifest_client() is None)
            works.append(work)
    return works


def _missing(session: Any, work: Work, cursor: int, limit: int, *, only_unsaid: bool) -> None:
    """The registry's next `limit` tag rows after `cursor` whose digest `images` lacks (one anti-join); with
    `only_unsaid` (a provider with no OCI client: what its API says is all there is to read) also those its
    provider said nothing of yet."""
    tags, repos, images, said = schema.tags.c, schema.repositories.c, schema.images.c, schema.listed_images.c
    query = (
        select(tags.id, tags.digest, repos.name)
        .join(schema.repositories, repos.id == tags.repository_id)
        .outerjoin(schema.images, images.digest == tags.digest)
        .where(repos.registry_id == work.registry_id, tags.id > cursor, images.digest.is_(None))
        .order_by(tags.id)
        .limit(limit)
    )
    if only_unsaid:
        query = query.outerjoin(
            schema.listed_images, (said.registry_id == work.registry_id) & (said.digest == tags.digest)
        ).where(said.digest.is_(None))
    rows = session.execute(query).all()
    for tag_id, digest, repository in rows:
        work.wanted.setdefault(digest, repository)
        work.last_id = tag_id
    work.complete = len(rows) < limit


def reselect(engine: Engine, registry_id: int, read: list[ImageMeta]) -> int:
    """The newest-build policies that rank the digests just stored, evaluated again in one transaction
    (`watcher.policies.evaluation.reevaluate_described`); their `selected` events written to the outbox like
    a poll's. Returns how many were written."""
    with session_scope(engine) as session:
        events = reevaluate_described(session, registry_id, {meta.digest for meta in read})
        if events:
            session.execute(insert(schema.events), event_rows(events))
    return len(events)


async def _read(engine: Engine, works: list[Work]) -> Filled:
    """Every registry's digests read at once (each within its own host limits), and stored."""
    filled = Filled(registries=len(works))

    async def one(work: Work) -> None:
        client = work.poller.manifest_client()
        try:
            if work.wanted:
                await work.poller.prepare()
                said = [one for one in await work.poller.said(work.wanted) if one.digest in work.wanted]
                await asyncio.to_thread(store_said, engine, work.registry_id, said)
                filled.stored += len(said)
            if work.wanted and client is None:
                unsaid = len(work.wanted) - len(said)
                filled.failed += unsaid
                work.failed = unsaid > 0  # asked again after RETRY_SECONDS
            elif work.wanted and client is not None:
                read, failed = await fetch_all(client, work.key, work.wanted, CONCURRENCY)
                await asyncio.to_thread(store, engine, read)
                filled.stored += len(read)
                if read:
                    filled.selected += await asyncio.to_thread(reselect, engine, work.registry_id, read)
                filled.failed += len(failed)
                work.failed = bool(failed)
        except WatcherError as exc:
            filled.failed += len(work.wanted)
            work.failed = True
            log.warning("registry %r: image metadata not filled: %s", work.key, str(exc).splitlines()[0])
        finally:
            filled.requests += work.poller.requests
            await work.poller.aclose()

    await asyncio.gather(*(one(work) for work in works))
    return filled
