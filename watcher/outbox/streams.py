"""Which Redis stream an event goes to: the one stream `WATCHER_EVENTS_STREAM`, or with
`WATCHER_STREAM_PER_WORKSPACE=true` its workspace's own `{WATCHER_EVENTS_STREAM}:{workspace}`, which a Redis
ACL user can be limited to (README, "A team's own stream"). Imports nothing heavy: `events tail` needs it."""

from __future__ import annotations

from watcher.settings import Settings

#: names that, as a workspace's stream `{WATCHER_EVENTS_STREAM}:{name}`, would be a key watcher keeps for
#: itself (the relay's memory of appended ids and its lock, the pool's workers): no workspace may take them.
#: Other internal keys have a further `:` in them, which a workspace name never has.
RESERVED_WORKSPACE_NAMES = frozenset({"appended", "relay-lock", "workers"})


def stream_of(settings: Settings, workspace: str) -> str:
    """The stream the events of `workspace` are appended to."""
    return f"{settings.events_stream}:{workspace}" if settings.stream_per_workspace else settings.events_stream
