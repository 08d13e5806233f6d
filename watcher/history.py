"""Reading the event history (the database keeps every event, the stream only the newest)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from watcher.errors import InputError
from watcher.models import Event


def parse_since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--since {text!r} is not an ISO 8601 time: use e.g. 2026-11-26T18:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def recent_events(
    session: Session,
    *,
    registry: str | None = None,
    repository: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[Event]:
    """The newest `limit` matching events, oldest first (the order they were detected in)."""
    query = select(Event)
    if registry:
        query = query.where(Event.registry_name == registry)
    if repository:
        query = query.where(Event.repository == repository)
    if since:
        query = query.where(Event.detected_at >= since)
    rows = list(session.scalars(query.order_by(Event.id.desc()).limit(limit)))
    rows.reverse()
    return rows
