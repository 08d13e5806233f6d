"""What a person does to a subscription besides adding and removing it: send its dead letters again, and
send it one sample event to see what its endpoint answers.

Shared by `watcher subscription redeliver|test`, the API and the console. A redelivered dead letter keeps
its id, so it takes its old place in the subscription's order: it goes before every later event still
pending. A test event is built here and sent once, through the same policed `sending.send` as every
delivery; it is never written to the history, the stream or the deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from watcher import schema
from watcher.delivery import formats, sending
from watcher.delivery.subscriptions import Filters, secret_of
from watcher.errors import InputError
from watcher.outbox.events import cloudevent
from watcher.read.model import pull_host
from watcher.read.subscriptions import subscription_row

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from watcher.read.model import Reader

DELIVERIES = schema.deliveries
#: a test event's id starts so: a receiver (or a person reading its log) can tell it from a real one
TEST_PREFIX = "test-"
#: what a test event names when the workspace has no tag to show
SAMPLE = ("example", "https://registry.example.com", "example/app", "test")


def redeliver(
    session: Session,
    name: str,
    *,
    workspace_id: int,
    delivery_ids: Sequence[int] | None = None,
    now: datetime | None = None,
) -> int:
    """Put the subscription's dead letters (all, or those of `delivery_ids`) back to pending: no attempts
    yet, due now, with a new 24 hours to be accepted in (their place in the order is their id). Returns how
    many; an id that is not one of its dead letters is one InputError, and then
    none is touched."""
    subscription_id = subscription_row(session, name, workspace_id=workspace_id).id
    dead: list[Any] = [DELIVERIES.c.subscription_id == subscription_id, DELIVERIES.c.state == "dead"]
    if delivery_ids is not None:
        wanted = sorted(set(delivery_ids))
        if not wanted:
            raise InputError("name the dead letters to redeliver, or all of them", field="delivery_ids")
        found = set(session.execute(select(DELIVERIES.c.id).where(*dead, DELIVERIES.c.id.in_(wanted))).scalars())
        absent = [i for i in wanted if i not in found]
        if absent:
            shown = ", ".join(str(i) for i in absent[:10]) + (", …" if len(absent) > 10 else "")
            raise InputError(
                f"not a dead letter of subscription {name!r}: {shown} (see `watcher subscription deliveries "
                f"{name} --state dead`)",
                field="delivery_ids",
            )
        dead.append(DELIVERIES.c.id.in_(wanted))
    now = now or schema.utcnow()
    moved = session.execute(
        update(DELIVERIES)
        .where(*dead)
        .values(state="pending", attempts=0, created_at=now, next_attempt_at=now, finished_at=None)
    )
    return int(moved.rowcount)  # type: ignore[attr-defined]


def sample_event(reader: Reader, subscription: Any) -> SimpleNamespace:
    """A clearly marked sample event for `subscription` (a row): id `test-…`, change `added` (or
    `selected` for a subscription to a policy), of the newest tag its filters would let through in the
    workspace's snapshot, else of `example/app:test`. It has every attribute of an event's read-model row."""
    filters = Filters.stored(subscription.filters)
    workspaces = schema.workspaces.c
    workspace = reader.execute(select(workspaces.name).where(workspaces.id == subscription.workspace_id)).scalar_one()
    registry, url, repository, tag, digest = _a_tag(reader, subscription.workspace_id, filters)
    change = "selected" if filters.policy or filters.changes == ("selected",) else "added"
    event = SimpleNamespace(
        id=0,
        event_id=f"{TEST_PREFIX}{uuid.uuid4()}",
        workspace_id=subscription.workspace_id,
        workspace=workspace,
        registry_id=None,
        registry_name=registry,
        repository=repository,
        tag=tag,
        change=change,
        digest=digest,
        previous_digest="",
        pushed_at=None,
        detected_at=datetime.now(UTC),
        policy=(filters.policy or "sample") if change == "selected" else None,
        previous_tag="",
        published_at=None,
        stream_id=None,
    )
    event.cloudevent = json.dumps(cloudevent(event, pull_host(url)), separators=(",", ":"))
    return event


def _a_tag(reader: Reader, workspace_id: int, filters: Filters) -> tuple[str, str, str, str, str]:
    """(registry, its URL, repository, tag, digest) of the workspace's newest stored tag within the
    subscription's registry and repository filters (one query, among its 100 newest tags), else the sample's."""
    registries, repositories, tags = schema.registries.c, schema.repositories.c, schema.tags.c
    query = (
        select(registries.name, registries.url, repositories.name, tags.name, tags.digest)
        .select_from(schema.tags.join(schema.repositories).join(schema.registries))
        .where(registries.workspace_id == workspace_id)
        .order_by(tags.id.desc())
        .limit(100)
    )
    if filters.registry:
        query = query.where(registries.name == filters.registry)
    where = Filters(registry=filters.registry, repository=filters.repository)
    for row in reader.execute(query):
        if where.matches(SimpleNamespace(registry_name=row[0], repository=row[2], change="added", policy=None)):
            return row[0], row[1], row[2], row[3], row[4]
    registry, url, repository, tag = SAMPLE
    return registry, url, repository, tag, "sha256:" + hashlib.sha256(b"watcher test event").hexdigest()


@dataclass(frozen=True)
class TestOutcome:
    """What the endpoint answered the sample event (`sending.Outcome`), and which event it was."""

    event_id: str
    outcome: sending.Outcome

    @property
    def delivered(self) -> bool:
        return self.outcome.kind == "delivered"

    def as_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "outcome": self.outcome.kind,
            "status": self.outcome.status,
            "error": self.outcome.error,
            "excerpt": self.outcome.excerpt,
            "event_id": self.event_id,
        }

    def line(self) -> str:
        """The answer in one line: `HTTP 200: <excerpt>`, or the error."""
        if self.outcome.status is None:
            return self.outcome.error
        return f"HTTP {self.outcome.status}" + (f": {self.outcome.excerpt}" if self.outcome.excerpt else "")


def test(subscription: Any, event: Any) -> TestOutcome:
    """Send `event` (a `sample_event`) once to `subscription` (a row), in its format, signed with its secret."""
    if subscription.format not in formats.BUILDERS:
        raise InputError(f"format {subscription.format!r} cannot be sent by this version", field="format")
    request = formats.build(subscription.format, subscription.url, secret_of(subscription), event)
    return TestOutcome(event.event_id, asyncio.run(_send_once(request)))


async def _send_once(request: formats.Outgoing) -> sending.Outcome:
    async with sending.client(pool=1) as http:
        return await sending.send(http, request)
