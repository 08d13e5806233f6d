"""What is known of a digest's image as one registry sees it: its events' `customData` and the creation
times `newest-build` policies rank.

Two sources, in order: `watcher.schema.images`, read from bytes verified against the digest and believed by
every registry; then `watcher.schema.listed_images`, what this registry's provider said of the digest in its
own API (`Poller.said`), believed for this registry alone, field by field where the verified row says
nothing. One lookup serves the poll's events (`watcher.polling.saving`), the poll's metadata step
(`watcher.polling.images`) and policy evaluation (`watcher.policies.evaluation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from sqlalchemy import select

from watcher import schema
from watcher.outbox.events import ImageFacts

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

#: digests per `IN (...)`
IN_CHUNK = 500


def known_facts(session: Session | Connection, registry_id: int, digests: Iterable[str]) -> dict[str, ImageFacts]:
    """The facts of those of `digests` that either source knows, for registry `registry_id`."""
    wanted = sorted(set(digests))
    verified: dict[str, ImageFacts] = {}
    listed: dict[str, ImageFacts] = {}
    images, said = schema.images.c, schema.listed_images.c
    for chunk in _chunks(wanted):
        rows = session.execute(
            select(images.digest, images.created, images.platforms, images.annotations).where(images.digest.in_(chunk))
        )
        verified |= {digest: ImageFacts.of(created, platforms, notes) for digest, created, platforms, notes in rows}
        told = session.execute(
            select(said.digest, said.created, said.platforms).where(
                said.registry_id == registry_id, said.digest.in_(chunk)
            )
        )
        listed |= {digest: ImageFacts.of(created, platforms, None) for digest, created, platforms in told}
    return {digest: merged(verified.get(digest), listed.get(digest)) for digest in verified.keys() | listed.keys()}


def merged(verified: ImageFacts | None, listed: ImageFacts | None) -> ImageFacts:
    """The verified facts, each empty one taken from what the provider listed."""
    if verified is None or listed is None:
        found = verified or listed
        assert found is not None
        return found
    return ImageFacts(
        verified.created or listed.created,
        verified.platforms or listed.platforms,
        verified.source,
        verified.revision,
    )


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]
