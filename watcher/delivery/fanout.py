"""Deliveries are born where events are published: one row per (subscription, event) the relay appends.

The relay (`watcher.outbox.relay`) calls `fan_out` inside the transaction that marks a batch of events
published, so a delivery row exists exactly when its event left the outbox: a relay that dies before its
commit leaves both undone (the next one does both), and a relay that runs the batch again adds nothing (the
unique (subscription, event) pair). Rows are written in event id order, the stream's order, which is the
order each subscription's deliveries are tried in. Only subscriptions of the events' own workspaces are
read: an event is never delivered to another workspace's subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from watcher import schema
from watcher.delivery.subscriptions import Filters

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection

SUBSCRIPTIONS = schema.subscriptions
DELIVERIES = schema.deliveries


def fan_out(connection: Connection, batch: Sequence[Any], now: datetime) -> dict[int, int]:
    """Write the deliveries of `batch` (read-model rows of events, in id order); returns how many each
    subscription got (subscription id -> count)."""
    workspaces = sorted({event.workspace_id for event in batch})
    if not workspaces:
        return {}
    subscriptions = [
        (row.id, row.workspace_id, Filters.stored(row.filters))
        for row in connection.execute(
            select(SUBSCRIPTIONS.c.id, SUBSCRIPTIONS.c.workspace_id, SUBSCRIPTIONS.c.filters)
            .where(SUBSCRIPTIONS.c.workspace_id.in_(workspaces))
            .order_by(SUBSCRIPTIONS.c.id)
        )
    ]
    if not subscriptions:
        return {}
    rows: list[dict[str, Any]] = []
    counts: dict[int, int] = {}
    for event in batch:
        for subscription_id, workspace_id, filters in subscriptions:
            if workspace_id == event.workspace_id and filters.matches(event):
                rows.append(
                    {
                        "subscription_id": subscription_id,
                        "event_id": event.id,
                        "state": "pending",
                        "attempts": 0,
                        "created_at": now,
                        "next_attempt_at": now,
                    }
                )
                counts[subscription_id] = counts.get(subscription_id, 0) + 1
    if rows:
        connection.execute(_insert_new(connection), rows)
    return counts


def _insert_new(connection: Connection) -> Any:
    """INSERT that leaves a (subscription, event) pair already written alone."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(DELIVERIES).on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
