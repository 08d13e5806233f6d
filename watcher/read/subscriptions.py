"""The read model's questions about subscriptions: which exist in a workspace and how their deliveries go,
one of them, and its deliveries. Shared by `watcher subscription list|show|deliveries`,
`/api/v1/subscriptions` and the console's subscription pages.

Like every question of `watcher.read.model`, each is asked within one workspace (`workspace_id`, required):
a subscription of another workspace is missing, exactly like one that does not exist. Nothing here reads
or returns a subscription's secret, and its URL is only ever shown through `shown_url` (a chat webhook's
URL is itself a credential).

A subscription's `state` is `failing` when its latest news is bad: its newest failed attempt is newer than
its newest accepted one (`last_failed_at` after `last_delivered_at`, or a failure and never a success), or
one of its deliveries was dead-lettered after its newest success. Otherwise it is `ok` — a subscription that
was never tried too. Redelivering its dead letters does not make it `ok`: the next accepted delivery does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import func, select

from watcher.errors import InputError, NotFoundError
from watcher.read.model import EPOCH, Page, _whole, aware_utc, check_limit, decode_cursor, encode_cursor
from watcher.read.views import rfc3339_or_none
from watcher.schema import deliveries as DELIVERIES
from watcher.schema import events as EVENTS
from watcher.schema import subscriptions as SUBSCRIPTIONS

if TYPE_CHECKING:
    from watcher.read.model import Reader

DELIVERY_STATES = ("pending", "delivered", "dead")
#: formats whose URL carries the credential (Slack's and Teams' webhook URLs): only their host is shown
SECRET_URLS = ("slack", "teams")
SubscriptionState = Literal["ok", "failing"]
SUB = SUBSCRIPTIONS.c
DEL = DELIVERIES.c


def shown_url(url: str, format: str) -> str:
    """The URL as it may be shown: a query string as `?…` (tokens live there), and for Slack and Teams,
    whose webhook URL is itself the credential, the host alone (`https://hooks.slack.com/…`)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if format in SECRET_URLS:
        return f"{origin}/…" if parts.path.strip("/") or parts.query else origin
    return origin + parts.path + ("?…" if parts.query else "")


def host_of(url: str) -> str:
    """The endpoint's host[:port], for a listing."""
    return urlsplit(url).netloc


@dataclass(frozen=True)
class SubscriptionView:
    """One subscription and how its deliveries go; never its secret."""

    name: str
    url: str  # as `shown_url` shows it
    host: str
    format: str
    filters: dict[str, Any]
    state: SubscriptionState
    pending: int
    dead: int
    last_delivered_at: datetime | None
    last_failed_at: datetime | None
    last_error: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "format": self.format,
            "filters": self.filters,
            "state": self.state,
            "pending": self.pending,
            "dead": self.dead,
            "last_delivered_at": rfc3339_or_none(self.last_delivered_at),
            "last_failed_at": rfc3339_or_none(self.last_failed_at),
            "last_error": self.last_error,
            "created_at": rfc3339_or_none(self.created_at),
        }


def subscriptions(reader: Reader, *, workspace_id: int) -> list[SubscriptionView]:
    """The workspace's subscriptions by name, with their state and counts: two queries, whatever their
    number."""
    return _views(reader, SUB.workspace_id == workspace_id)


def subscription(reader: Reader, name: str, *, workspace_id: int) -> SubscriptionView:
    """One subscription, or NotFoundError naming it (in another workspace too)."""
    found = _views(reader, SUB.workspace_id == workspace_id, SUB.name == askable(name))
    if not found:
        raise missing(name)
    return found[0]


def subscription_row(reader: Reader, name: str, *, workspace_id: int) -> Any:
    """The subscription's row (its secret still encrypted: for `watcher.delivery.manage`), or NotFoundError."""
    query = select(SUBSCRIPTIONS).where(SUB.workspace_id == workspace_id, SUB.name == askable(name))
    row = reader.execute(query).first()
    if row is None:
        raise missing(name)
    return row


def _views(reader: Reader, *conditions: Any) -> list[SubscriptionView]:
    columns = (
        SUB.id,
        SUB.name,
        SUB.url,
        SUB.format,
        SUB.filters,
        SUB.last_delivered_at,
        SUB.last_failed_at,
        SUB.last_error,
        SUB.created_at,
    )
    rows = reader.execute(select(*columns).where(*conditions).order_by(SUB.name)).all()
    if not rows:
        return []
    within = select(SUB.id).where(*conditions)
    ended = func.max(func.coalesce(DEL.finished_at, DEL.next_attempt_at))
    counts: dict[tuple[int, str], tuple[int, Any]] = {
        (row[0], row[1]): (row[2], row[3])
        for row in reader.execute(
            select(DEL.subscription_id, DEL.state, func.count(), ended)
            .where(DEL.subscription_id.in_(within), DEL.state.in_(("pending", "dead")))
            .group_by(DEL.subscription_id, DEL.state)
        )
    }
    views = []
    for row in rows:
        pending, _ = counts.get((row.id, "pending"), (0, None))
        dead, last_dead = counts.get((row.id, "dead"), (0, None))
        views.append(
            SubscriptionView(
                name=row.name,
                url=shown_url(row.url, row.format),
                host=host_of(row.url),
                format=row.format,
                filters={key: value for key, value in (row.filters or {}).items() if value},
                state=state_of(row.last_delivered_at, row.last_failed_at, aware_utc(last_dead)),
                pending=pending,
                dead=dead,
                last_delivered_at=row.last_delivered_at,
                last_failed_at=row.last_failed_at,
                last_error=row.last_error or "",
                created_at=row.created_at,
            )
        )
    return views


def state_of(
    last_delivered: datetime | None, last_failed: datetime | None, last_dead: datetime | None
) -> SubscriptionState:
    """`failing` when a failed attempt or a dead letter is newer than the newest success (see the module)."""
    success = aware_utc(last_delivered) or EPOCH
    bad = [moment for moment in (aware_utc(last_failed), aware_utc(last_dead)) if moment is not None]
    return "failing" if any(moment > success for moment in bad) else "ok"


# ---- deliveries ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryView:
    """One delivery and the event it carries."""

    id: int
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None
    last_status: int | None
    last_error: str
    event_id: str
    registry: str
    repository: str
    tag: str
    change: str
    digest: str
    policy: str | None
    detected_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": rfc3339_or_none(self.created_at),
            "next_attempt_at": rfc3339_or_none(self.next_attempt_at) if self.state == "pending" else None,
            "finished_at": rfc3339_or_none(self.finished_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "event": {
                "event_id": self.event_id,
                "registry": self.registry,
                "repository": self.repository,
                "tag": self.tag,
                "change": self.change,
                "digest": self.digest,
                "policy": self.policy,
                "detected_at": rfc3339_or_none(self.detected_at),
            },
        }


def deliveries_page(
    reader: Reader,
    name: str,
    *,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
    workspace_id: int,
) -> Page:
    """The subscription's deliveries (of one state, if given), newest first, keyset-paged on the delivery id
    (`ix_deliveries_subscription_state_id`); items are `DeliveryView`s."""
    check_limit(limit)
    subscription_id = subscription_row(reader, name, workspace_id=workspace_id).id
    event = EVENTS.c
    query = (
        select(
            DEL.id,
            DEL.state,
            DEL.attempts,
            DEL.created_at,
            DEL.next_attempt_at,
            DEL.finished_at,
            DEL.last_status,
            DEL.last_error,
            event.event_id,
            event.registry,
            event.repository,
            event.tag,
            event.change,
            event.digest,
            event.policy,
            event.detected_at,
        )
        .join(EVENTS, event.id == DEL.event_id)
        .where(DEL.subscription_id == subscription_id)
    )
    if state is not None:
        query = query.where(DEL.state == check_state(state))
    if cursor:
        (before,) = decode_cursor(cursor, _whole)
        query = query.where(DEL.id < before)
    rows = reader.execute(query.order_by(DEL.id.desc()).limit(limit + 1)).all()
    items = [DeliveryView(**{**row._asdict(), "last_error": row.last_error or ""}) for row in rows[:limit]]
    return Page(items, encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None)


def check_state(state: str) -> str:
    if state not in DELIVERY_STATES:
        raise InputError(f"state {state[:40]!r} is not one of {', '.join(DELIVERY_STATES)}", field="state")
    return state


def askable(name: str) -> str:
    if "\x00" in name:  # in no name, and PostgreSQL cannot even be asked about one
        raise missing(name)
    return name


def missing(name: str) -> NotFoundError:
    from watcher.delivery.subscriptions import missing  # the one line, where a subscription is not found

    return missing(name)
