"""Connection pools and shared host limits kept warm between the polls of one worker process.

A worker polls the same registries again and again. Building a client per poll cost each poll its
connections (a name lookup on a thread, TCP and TLS set-up, then closing them all) and its Redis
connection for the host limits. So on a long-lived event loop (`watcher.registry.deadline` keeps one per thread)
the transport and shared limits of each origin are kept: per loop, keyed by everything they were built
from (origin, TLS setting, limits, the installation's Redis and prefix, the network policy), at most
MAX_ORIGINS of them, and closed once unused for IDLE_SECONDS (looked at whenever one is asked for).
Clients stay per poll (their request counts and auth are the poll's); only what is under them is shared.
Only a worker keeps them (`enable`, at its start): a `watcher poll` process polls once, and a name that
resolves elsewhere by the next poll is looked up again there. Otherwise, and outside a running event loop,
nothing is kept: the caller owns and closes what it gets.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watcher.settings import get_settings

if TYPE_CHECKING:  # httpx only where a transport is made: an SDK provider's poll (ECR) never loads it
    import httpx

    from watcher.registry.sharedlimits import SharedLimits

#: origins kept per event loop; the least recently used unused one is closed past this
MAX_ORIGINS = 64
#: an origin unused this long has its connections closed
IDLE_SECONDS = 300.0


@dataclass
class Warm:
    """One origin's transport and shared limits, and how many clients use them now."""

    transport: httpx.AsyncBaseTransport
    shared: SharedLimits
    users: int = 0
    used: float = field(default_factory=time.monotonic)

    def done(self) -> None:
        """A client is done with them (they stay open for the next)."""
        self.users -= 1
        self.used = time.monotonic()

    async def aclose(self) -> None:
        await self.shared.aclose()
        await self.transport.aclose()


_ENABLED = False


def enable() -> None:
    """Keep transports between polls in this process (a worker's)."""
    global _ENABLED
    _ENABLED = True


def enabled() -> bool:
    return _ENABLED


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[Hashable, Warm]] = (
    weakref.WeakKeyDictionary()
)


def key_for(base_url: str, verify: bool | str, limits: Hashable) -> Hashable:
    """Everything a transport and its shared limits are built from."""
    from watcher.registry.origin import origin_of  # httpx's URL: loaded with the transport it keys

    settings = get_settings()
    return (
        origin_of(base_url),
        verify,
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
        limits,
        settings.redis_url,
        settings.events_stream,
        settings.limit_lease_seconds,
        repr(settings.deny_networks),
        repr(settings.allow_networks),
    )


def checkout(key: Hashable, make: Callable[[], Warm]) -> Warm | None:
    """The warm entry for `key` on the running loop (`make` builds it the first time), with one more user;
    None outside a running loop, or when this process keeps nothing."""
    if not _ENABLED:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    kept = _BY_LOOP.setdefault(loop, OrderedDict())
    _sweep(loop, kept)
    entry = kept.get(key)
    if entry is None:
        entry = kept[key] = make()
    kept.move_to_end(key)
    entry.users += 1
    entry.used = time.monotonic()
    return entry


def _sweep(loop: asyncio.AbstractEventLoop, kept: OrderedDict[Hashable, Warm]) -> None:
    """Close the entries unused for IDLE_SECONDS, and the least recently used unused ones past MAX_ORIGINS."""
    now = time.monotonic()
    unused = [key for key, entry in kept.items() if entry.users <= 0]
    over = max(0, len(kept) + 1 - MAX_ORIGINS)
    for key in unused:
        if over > 0 or now - kept[key].used > IDLE_SECONDS:
            over -= 1
            entry = kept.pop(key)
            task = loop.create_task(entry.aclose())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()


def close_all(loop: asyncio.AbstractEventLoop) -> None:
    """Close every transport kept on `loop` (which must not be running): a worker's, at its end."""
    kept = _BY_LOOP.pop(loop, None)

    async def close() -> None:
        await asyncio.gather(*(entry.aclose() for entry in (kept or {}).values()), return_exceptions=True)

    loop.run_until_complete(close())
