"""What the deliveries' state says about each subscription: how far behind it is.

A subscription's lag is the age of its oldest pending delivery (0 when none waits): a healthy endpoint
keeps it near the push-to-delivered time, one that fails lets it grow until the delivery is delivered or
dead-lettered. One grouped query; `/metrics` shows it per subscription, named with its workspace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, select

from watcher.read.model import aware_utc
from watcher.schema import deliveries as DELIVERIES
from watcher.schema import subscriptions as SUBSCRIPTIONS
from watcher.schema import workspaces as WORKSPACES

if TYPE_CHECKING:
    from watcher.read.model import Reader


def delivery_lags(
    reader: Reader, now: datetime | None = None, *, workspace_id: int | None = None
) -> dict[tuple[str, str], float]:
    """(workspace, subscription) -> seconds since its oldest pending delivery was written (0 when none),
    for every subscription (or only `workspace_id`'s)."""
    waiting = and_(DELIVERIES.c.subscription_id == SUBSCRIPTIONS.c.id, DELIVERIES.c.state == "pending")
    query = (
        select(WORKSPACES.c.name, SUBSCRIPTIONS.c.name, func.min(DELIVERIES.c.created_at))
        .select_from(SUBSCRIPTIONS.join(WORKSPACES).outerjoin(DELIVERIES, waiting))
        .group_by(SUBSCRIPTIONS.c.id, WORKSPACES.c.name, SUBSCRIPTIONS.c.name)
    )
    if workspace_id is not None:
        query = query.where(SUBSCRIPTIONS.c.workspace_id == workspace_id)
    now = now or datetime.now(UTC)
    return {(workspace, name): _age(now, aware_utc(oldest)) for workspace, name, oldest in reader.execute(query)}


def _age(now: datetime, oldest: datetime | None) -> float:
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
