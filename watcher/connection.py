"""Testing a registry's connection before it is saved (or on demand): ping, credentials, listing permission.

The CLI's `registry add`/`test` and the HTTP API's registration and `test` routes all call `verify`, and it
is bounded like a poll: the registry's `--poll-timeout` is its deadline, so a registry that trickles its
answer cannot hold a command or a request forever.
"""

from __future__ import annotations

import threading

from watcher.bounded import run_bounded
from watcher.errors import RegistryError
from watcher.pollers import poller_for
from watcher.polling import poll_timeout
from watcher.spec import RegistrySpec, format_interval


def verify(spec: RegistrySpec, stop: threading.Event | None = None) -> None:
    """Raises the precise RegistryError, named for the registry, when the registry cannot be listed."""

    async def run() -> None:
        poller = poller_for(spec)
        try:
            await poller.verify()
        finally:
            await poller.aclose()

    seconds = poll_timeout(spec)
    try:
        run_bounded(
            run,
            seconds=seconds,
            stop=stop or threading.Event(),
            deadline_message=f"the test exceeded its {format_interval(int(seconds))} deadline (--poll-timeout)",
        )
    except RegistryError as exc:
        exc.registry = spec.name
        raise
