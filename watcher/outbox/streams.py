"""Which Redis stream an event goes to: the one stream `WATCHER_EVENTS_STREAM`, or with
`WATCHER_STREAM_PER_WORKSPACE=true` its workspace's own `{WATCHER_EVENTS_STREAM}:{workspace}`, which a Redis
ACL user can be limited to (README, "A team's own stream"). Imports nothing heavy: `events tail` needs it."""

from __future__ import annotations

from watcher.settings import Settings


def stream_of(settings: Settings, workspace: str) -> str:
    """The stream the events of `workspace` are appended to."""
    return f"{settings.events_stream}:{workspace}" if settings.stream_per_workspace else settings.events_stream
