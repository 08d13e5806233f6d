"""Image metadata for the digests a registry serves: fetched only for digests the installation does not know.

`watcher.schema.images` is keyed by digest alone, and every row is read from bytes verified against the
digest (`watcher.registry.imagemeta`), so whichever registry (or workspace) serves a known digest next costs
no request at all: the database is asked first. The missing ones are read through the client of the poll
that found them (`Poller.manifest_client`: its transport, host limits, credentials, origin guard, network
policy and body cap), never a second one. A digest that fails (a mismatch, a 404, a body too large) stores
nothing; a poll says so in one warning line, and its events go out without the metadata.

A provider's own API may say some of it first (`Poller.said`: ECR's `describeImages`, Google's `manifest`
map, Docker Hub's tag entries, from what the listing read; ACR with Azure AD, a request each): what it says
is not verified, so it is stored per registry (`watcher.schema.listed_images`) and believed for that
registry alone, and only the digests it said nothing of are fetched. That is how ECR and ACR with Azure
AD, which have no OCI client, have metadata at all.

After a registry's baseline a poll describes its new digests between listing a group and committing it
(`describe`), so their events carry the metadata (`watcher.outbox.events.ImageFacts`); a steady poll has no
group and asks nothing. The baseline's digests are filled in the background (`watcher.polling.imagefill`),
from OCI registries; what a provider's listing says of them is not stored: on 100,000 ECR tags that cost a
second table's worth of rows (+25-37 % of the baseline's CPU, 2.5x its database; benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from watcher import errors, schema
from watcher.db import session_scope
from watcher.outbox.events import ImageFacts
from watcher.outbox.imagefacts import known_facts
from watcher.pollers.base import Poller, gather_all
from watcher.polling.saving import Listed, Target, read_before
from watcher.registry.imagemeta import ImageMeta, fetch
from watcher.registry.reference import digest_problem, repository_problem, shown
from watcher.registry.said import SaidImage

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from watcher.registry.oci import OciClient

log = logging.getLogger("watcher")
#: the most digests one group fetches before its events are written (an image costs two requests); the
#: others' events go out without their metadata, and the background fill reads them
MAX_PER_GROUP = 500


@dataclass
class Ensured:
    """What one `ensure` did: how many digests were known already, which it stored, which failed and why."""

    known: int = 0
    stored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    requests: int = 0


def known_digests(conn: Connection, digests: list[str]) -> set[str]:
    """The ones of `digests` that `images` holds."""
    found: set[str] = set()
    for query in schema.matching(conn, select(schema.images.c.digest), schema.images.c.digest, digests):
        found.update(conn.execute(query).scalars())
    return found


def store(engine: Engine, metas: list[ImageMeta]) -> None:
    """The digests' rows, in one statement; a row another worker stored first is kept (both were read from
    the same bytes)."""
    if not metas:
        return
    now = schema.utcnow()
    rows = [
        {
            "digest": meta.digest,
            "kind": meta.kind,
            "platforms": meta.platforms,
            "created": meta.created,
            "size": meta.size,
            "annotations": meta.annotations,
            "fetched_at": now,
        }
        for meta in metas
    ]
    with engine.begin() as conn:
        conn.execute(_insert(engine)(schema.images).values(rows).on_conflict_do_nothing(index_elements=["digest"]))


def facts_of(meta: ImageMeta) -> ImageFacts:
    return ImageFacts.of(meta.created, meta.platforms, meta.annotations)


async def fetch_all(
    client: OciClient, key: str, wanted: Mapping[str, str], concurrency: int
) -> tuple[list[ImageMeta], dict[str, str]]:
    """Each digest of `wanted` (-> a repository serving it) read and verified, `concurrency` at once (the
    host limits hold the requests too): what was read, and each failure's line. One warning names them."""
    read: list[ImageMeta] = []
    failed: dict[str, str] = {}
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(digest: str, repository: str) -> None:
        problem = digest_problem(digest) or repository_problem(repository)
        if problem is not None:
            failed[digest] = f"{shown(digest)} in {shown(repository)} {problem}"
            return
        async with slots:
            try:
                read.append(await fetch(client, repository, digest))
            except errors.RegistryError as exc:
                failed[digest] = exc.message

    await gather_all([one(digest, repo) for digest, repo in sorted(wanted.items())])
    if failed:
        first, line = next(iter(sorted(failed.items())))
        more = f" (and {len(failed) - 1} more digests)" if len(failed) > 1 else ""
        log.warning("registry %r: no image metadata stored for %s%s: %s", key, shown(first), more, line)
    return read, failed


async def ensure(engine: Engine, poller: Poller, wanted: Mapping[str, str]) -> Ensured:
    """Metadata for every digest of `wanted` (digest -> a repository of `poller`'s registry that serves it),
    through `poller`'s own client (prepared by the caller): the unknown ones are fetched and stored; the
    known ones cost nothing."""
    result = Ensured()
    with engine.connect() as conn:
        known = known_digests(conn, sorted(d for d in wanted if digest_problem(d) is None))
    result.known = len(known)
    missing = {digest: repo for digest, repo in wanted.items() if digest not in known}
    if not missing:
        return result
    client = poller.manifest_client()
    if client is None:
        line = f"provider {poller.spec.provider} has no OCI client to read manifests with"
        result.failed = dict.fromkeys(missing, line)
        log.warning("registry %r: no image metadata stored for %d digests: %s", poller.spec.key, len(missing), line)
        return result
    before = client.requests
    read, result.failed = await fetch_all(client, poller.spec.key, missing, poller.limits.max_concurrency)
    store(engine, read)
    result.stored = sorted(meta.digest for meta in read)
    result.requests = client.requests - before
    return result


async def describe(
    poller: Poller, engine: Engine, target: Target, group: list[Listed], writer: Executor | None
) -> None:
    """Before `group` is committed: its stored rows read (on `writer`, the thread that commits it) and kept
    on it; its new digests that neither `images` nor this registry's `listed_images` know asked of the
    provider's own API first (`Poller.said`, stored per registry), and those it says nothing of fetched with
    the poll's own client and stored; what is known of its changes' digests kept on it for their events
    (`watcher.polling.saving`). A failure is the events' loss only."""
    try:
        await _describe(poller, engine, target, group, writer)
    finally:
        poller.forget(item.name for item in group)


async def _describe(
    poller: Poller, engine: Engine, target: Target, group: list[Listed], writer: Executor | None
) -> None:
    loop = asyncio.get_running_loop()
    wanted, facts = await loop.run_in_executor(writer, partial(_before, engine, target, group))
    if wanted:
        said = [one for one in await poller.said(wanted) if one.digest in wanted]
        if said:
            await loop.run_in_executor(writer, store_said, engine, target.registry_id, said)
            facts |= {one.digest: ImageFacts.of(one.created, one.platforms, None) for one in said}
            wanted = {digest: repo for digest, repo in wanted.items() if digest not in facts}
    client = poller.manifest_client()
    if wanted and client is not None:
        read, _ = await fetch_all(client, target.key, wanted, poller.limits.max_concurrency)
        await loop.run_in_executor(writer, store, engine, read)
        facts |= {meta.digest: facts_of(meta) for meta in read}
    for item in group:
        item.images = facts


def store_said(engine: Engine, registry_id: int, said: list[SaidImage]) -> None:
    """What the registry's provider said of these digests, in one statement, for that registry alone; a
    digest it said before keeps what was stored (the same listing says the same)."""
    if not said:
        return
    now = schema.utcnow()
    rows = [
        {
            "registry_id": registry_id,
            "digest": one.digest,
            "kind": one.kind,
            "platforms": one.platforms,
            "created": one.created,
            "size": one.size,
            "said_at": now,
        }
        for one in said
    ]
    with engine.begin() as conn:
        conn.execute(_insert(engine)(schema.listed_images).values(rows).on_conflict_do_nothing())


def _insert(engine: Engine) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert


def _before(engine: Engine, target: Target, group: list[Listed]) -> tuple[dict[str, str], dict[str, ImageFacts]]:
    """The group's rows and changes (`saving.read_before`), what is known of its changes' digests
    (`watcher.outbox.imagefacts`), and the new digests nothing is known of (at most MAX_PER_GROUP) with a
    repository serving each."""
    with session_scope(engine) as session:
        new = read_before(session, target, group)
        digests = {change.digest for item in group if item.before for change in item.before.changes}
        facts = known_facts(session, target.registry_id, digests)
    wanted = {digest: repo for digest, repo in sorted(new.items()) if digest not in facts}
    return dict(list(wanted.items())[:MAX_PER_GROUP]), facts
