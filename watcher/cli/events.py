"""`watcher events`: the event history, and `events tail` to follow the stream."""

from __future__ import annotations

import json

import click

from watcher.cli.common import current_workspace, friendly, line_of, workspace_option
from watcher.runtime import heap
from watcher.settings import get_settings

MAX_EVENTS_LIMIT = 10_000  # `events --limit`: more is a job for the HTTP API's paging
MAX_CLAIM_IDLE_SECONDS = 7 * 86400


@click.group("events", invoke_without_command=True)
@click.option("--registry", "registry_name", help="only this registry")
@click.option("--repository", help="only this repository")
@click.option("--since", help="only events detected at or after this ISO 8601 time")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, MAX_EVENTS_LIMIT), help="newest N events"
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@workspace_option
@click.pass_context
@friendly
@heap.holding
def events(
    ctx: click.Context, registry_name: str | None, repository: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Show the workspace's event history (oldest first), or follow the stream with `events tail`."""
    if ctx.invoked_subcommand is not None:
        return
    from watcher.db import read_scope
    from watcher.outbox.events import stream_entry
    from watcher.outbox.history import parse_since, recent_events
    from watcher.read.model import workspace_id_of

    since_at = parse_since(since) if since else None
    workspace = current_workspace()
    with read_scope() as reader:
        rows = recent_events(
            reader,
            registry=registry_name,
            repository=repository,
            since=since_at,
            limit=limit,
            workspace_id=workspace_id_of(reader, workspace),
        )
        entries = [stream_entry(e) for e in rows]
    for entry in entries:
        click.echo(json.dumps(entry) if as_json else line_of(entry))


@events.command("tail")
@click.option("--group", help="consumer group: members share the stream, abandoned entries are claimed")
@click.option("--consumer", help="this member's name in the group (default: host:pid)")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option(
    "--claim-idle",
    default=60,
    show_default=True,
    type=click.IntRange(0, MAX_CLAIM_IDLE_SECONDS),
    help="seconds before another member's entry is claimed",
)
@workspace_option
@friendly
def events_tail(group: str | None, consumer: str | None, count: int | None, as_json: bool, claim_idle: int) -> None:
    """Follow the event stream as it grows (with WATCHER_STREAM_PER_WORKSPACE, the workspace's own stream)."""
    import os
    import socket

    from watcher import bus
    from watcher.outbox.consumer import read_group, read_live
    from watcher.outbox.streams import stream_of

    settings = get_settings()
    stream = stream_of(settings, current_workspace())
    client = bus.connect()
    seen = 0

    def keep_going() -> bool:
        return count is None or seen < count

    consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
    entries = (
        read_group(client, stream, group, consumer, claim_idle_ms=claim_idle * 1000, keep_going=keep_going)
        if group
        else read_live(client, stream, keep_going=keep_going)
    )
    try:
        for entry_id, fields in entries:
            click.echo(json.dumps({"stream_id": entry_id, **fields}) if as_json else line_of(fields))
            if group:
                client.xack(stream, group, entry_id)
            seen += 1
            if not keep_going():
                break
    except KeyboardInterrupt:
        pass
