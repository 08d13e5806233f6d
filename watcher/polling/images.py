"""Image metadata for the digests a registry serves: fetched only for digests the installation does not know.

`watcher.schema.images` is keyed by digest alone, and every row is read from bytes verified against the
digest (`watcher.registry.imagemeta`), so whichever registry (or workspace) serves a known digest next costs
no request at all: `ensure` asks the database first and opens no client when nothing is missing. The
missing ones are fetched a few at a time, within the registry's host limits, through the provider's own
OCI client (its credentials, origin guard, network policy and body cap), and each is stored as soon as it
is read; a digest that fails (a mismatch, a 404, a body too large) stores nothing and is one log line.

Not yet called by a poll: the pipeline will ask it for new digests after a baseline (issue 16).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from watcher import errors, schema
from watcher.pollers import poller_for
from watcher.pollers.base import gather_all
from watcher.registry.imagemeta import ImageMeta, fetch
from watcher.registry.oci import OciClient
from watcher.registry.reference import digest_problem, repository_problem, shown

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from watcher.registrations.spec import RegistrySpec

log = logging.getLogger("watcher")
#: digests fetched at once by one call (the registry's host limits bound its requests as well)
MAX_FETCHES = 4
#: digests looked up in one query
LOOKUP_CHUNK = 500


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
    for start in range(0, len(digests), LOOKUP_CHUNK):
        chunk = digests[start : start + LOOKUP_CHUNK]
        found.update(conn.execute(select(schema.images.c.digest).where(schema.images.c.digest.in_(chunk))).scalars())
    return found


def store(engine: Engine, meta: ImageMeta) -> None:
    """One digest's row; a row another worker stored first is kept (both were read from the same bytes)."""
    row = {
        "digest": meta.digest,
        "kind": meta.kind,
        "platforms": meta.platforms,
        "created": meta.created,
        "size": meta.size,
        "annotations": meta.annotations,
        "fetched_at": schema.utcnow(),
    }
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    with engine.begin() as conn:
        conn.execute(insert(schema.images).values(row).on_conflict_do_nothing(index_elements=["digest"]))


async def ensure(engine: Engine, spec: RegistrySpec, wanted: Mapping[str, str]) -> Ensured:
    """Metadata for every digest of `wanted` (digest -> a repository of `spec`'s registry that serves it):
    the unknown ones are fetched from that registry and stored; the known ones cost nothing."""
    result = Ensured()
    valid: dict[str, str] = {}
    for digest, repository in wanted.items():
        problem = digest_problem(digest) or repository_problem(repository)
        if problem is not None:
            _failed(result, spec, digest, f"{shown(digest)} in {shown(repository)} {problem}")
        else:
            valid[digest] = repository
    with engine.connect() as conn:
        known = known_digests(conn, sorted(valid))
    result.known = len(known)
    missing = {digest: repo for digest, repo in valid.items() if digest not in known}
    if not missing:
        return result
    poller = poller_for(spec)
    try:
        client = getattr(poller, "client", None)
        if not isinstance(client, OciClient):
            for digest in missing:
                _failed(result, spec, digest, f"provider {spec.provider} has no OCI client to read manifests with")
            return result
        await poller.prepare()
        slots = asyncio.Semaphore(MAX_FETCHES)

        async def one(digest: str, repository: str) -> None:
            async with slots:
                try:
                    meta = await fetch(client, repository, digest)
                except errors.RegistryError as exc:
                    _failed(result, spec, digest, exc.message)
                    return
            store(engine, meta)
            result.stored.append(digest)

        await gather_all([one(digest, repo) for digest, repo in sorted(missing.items())])
        result.requests = client.requests
    finally:
        await poller.aclose()
    return result


def _failed(result: Ensured, spec: RegistrySpec, digest: str, line: str) -> None:
    result.failed[digest] = line
    log.warning("registry %r: no image metadata stored for %s: %s", spec.key, shown(digest), line)
