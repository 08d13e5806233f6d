"""Reading what images are, as a poll (or the background fill) does: through the registry's own poller."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sqlalchemy import Engine

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
