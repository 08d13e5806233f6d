"""What is known of a digest's image as one registry sees it: its events' `customData` and the creation
times `newest-build` policies rank.

Two sources, in order: `watcher.schema.images`, read from bytes verified against the digest and believed by
every registry; then `watcher.schema.listed_images`, what this registry's provider said of the digest in its
own API (`Poller.said`), believed for this registry alone, field by field where the verified row says
nothing. One lookup serves the poll's events (`watcher.polling.saving`), the poll's metadata step
(`watcher.polling.images`) and policy evaluation (`watcher.policies.evaluation`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from watcher import schema
from watcher.outbox.events import ImageFacts

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session


def known_facts(session: Session | Connection, registry_id: int, digests: Iterable[str]) -> dict[str, ImageFacts]:
    """The facts of those of `digests` that either source knows, for registry `registry_id`."""
    wanted = sorted(set(digests))
    verified: dict[str, ImageFacts] = {}
    listed: dict[str, ImageFacts] = {}
    images, said = schema.images.c, schema.listed_images.c
    facts = select(images.digest, images.created, images.platforms, images.annotations)
    for query in schema.matching(session, facts, images.digest, wanted):
        rows = session.execute(query)
        verified |= {digest: ImageFacts.of(created, platforms, notes) for digest, created, platforms, notes in rows}
    told = select(said.digest, said.created, said.platforms).where(said.registry_id == registry_id)
    for query in schema.matching(session, told, said.digest, wanted):
        said_rows = session.execute(query)
        listed |= {digest: ImageFacts.of(created, platforms, None) for digest, created, platforms in said_rows}
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
