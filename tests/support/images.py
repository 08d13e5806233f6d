"""Reading what images are, as a poll (or the background fill) does: through the registry's own poller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select

from tests.support.cdevents import validate_cloudevent
from watcher import schema
from watcher.pollers import poller_for
from watcher.polling.images import Ensured, ensure
from watcher.registrations.spec import RegistrySpec


def ensure_images(engine: Engine, spec: RegistrySpec, wanted: Mapping[str, str]) -> Ensured:
    """`ensure` the digests of `wanted` (digest -> a repository serving it) through `spec`'s poller."""

    async def ensured() -> Ensured:
        poller = poller_for(spec)
        try:
            await poller.prepare()
            return await ensure(engine, poller, wanted)
        finally:
            await poller.aclose()

    return asyncio.run(ensured())


def shown_images(watcher: Any, registry: str) -> dict[str, dict[str, Any]]:
    """`watcher images REGISTRY --json`, by tag: what the read model shows of each tag's image."""
    result = watcher.cli("images", registry, "--json")
    assert result.exit_code == 0, result.output
    return {image["tag"]: image for image in map(json.loads, result.stdout.splitlines())}


def said_rows(engine: Engine) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Every `listed_images` row: (registry name, digest) -> (kind, platforms, created, size)."""
    said, registries = schema.listed_images.c, schema.registries.c
    columns = (registries.name, said.digest, said.kind, said.platforms, said.created, said.size)
    query = select(*columns).join(schema.registries, registries.id == said.registry_id)
    with engine.connect() as conn:
        return {(row[0], row[1]): tuple(row[2:]) for row in conn.execute(query)}


def added_custom_data(entries: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Each `added` stream entry's tag -> its CloudEvent's customData (checked against CDEvents first)."""
    found = {}
    for entry in entries:
        if entry["change"] == "added":
            document = json.loads(entry["cloudevent"])
            validate_cloudevent(document)
            found[entry["tag"]] = document["data"]["customData"]
    return found
