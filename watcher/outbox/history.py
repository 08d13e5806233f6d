"""Reading the event history (the database keeps every event, the stream only the newest)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from watcher.errors import InputError
from watcher.read.model import MAX_PAGE, EventFilters, events_page, in_utc

if TYPE_CHECKING:
    from watcher.read.model import Reader


def parse_since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--since {text!r} is not an ISO 8601 time: use e.g. 2026-11-26T18:00:00Z") from None
    return in_utc(moment, "--since")


def recent_events(
    reader: Reader,
    *,
    registry: str | None = None,
    repository: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    workspace_id: int,
) -> list[Any]:
    """The workspace's newest `limit` matching events, oldest first (the order they were detected in): the
    read model's rows, with the attributes of `watcher.models.Event`."""
    filters = EventFilters(registry=registry, repository=repository, since=since)
    rows: list[Any] = []
    cursor: str | None = None
    while len(rows) < limit:
        page = events_page(
            reader, filters, cursor=cursor, limit=min(MAX_PAGE, limit - len(rows)), workspace_id=workspace_id
        )
        rows.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    rows.reverse()
    return rows
