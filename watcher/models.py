"""The state database as ORM classes, for the paths that write: registries, repositories, tag snapshots,
the event history (the outbox) and polls. Each class is mapped onto its table in `watcher.schema` (one
declaration of each table); what only reads uses those tables with SQLAlchemy Core and never imports this
module or the ORM (`watcher.read.model`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, Table, select
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property

from watcher import schema
from watcher.registrations.keys import registry_key
from watcher.schema import DIGEST_LENGTH as DIGEST_LENGTH
from watcher.schema import UTCDateTime as UTCDateTime
from watcher.schema import utcnow as utcnow


def _workspace_name(table: Table) -> ScalarSelect[str]:
    """The name of the workspace that owns a row of `table`, as a column loaded with the row; its own FROM
    even in a query that joins the workspaces."""
    owner = schema.workspaces.c
    return (
        select(owner.name).where(owner.id == table.c.workspace_id).correlate_except(schema.workspaces).scalar_subquery()
    )


class Base(DeclarativeBase):
    metadata = schema.metadata


class Workspace(Base):
    """One team's workspace: what it owns, and its quotas (None: no limit)."""

    __table__ = schema.workspaces

    id: Mapped[int]
    name: Mapped[str]
    max_registries: Mapped[int | None]
    min_interval_seconds: Mapped[int | None]
    max_concurrent_polls: Mapped[int | None]
    created_at: Mapped[datetime]


class Registry(Base):
    """One registered registry: how to reach it, what to watch, and when it is next due."""

    __table__ = schema.registries

    id: Mapped[int]
    workspace_id: Mapped[int]
    name: Mapped[str]
    provider: Mapped[str]
    url: Mapped[str]
    credentials: Mapped[str]
    options: Mapped[dict[str, Any]]
    interval_seconds: Mapped[int]
    emit_existing: Mapped[bool]
    baselined: Mapped[bool]
    next_poll_at: Mapped[datetime]
    lease_owner: Mapped[str | None]
    lease_until: Mapped[datetime | None]
    due_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    webhook_secret: Mapped[str | None]
    webhook_format: Mapped[str | None]
    webhook_enabled: Mapped[bool]
    last_webhook_at: Mapped[datetime | None]
    #: the owning workspace's name, loaded with the row
    workspace: Mapped[str] = column_property(_workspace_name(schema.registries))

    @property
    def key(self) -> str:
        """The registry's key across the deployment (`watcher.registrations.keys`)."""
        return registry_key(self.workspace, self.name)


class Repository(Base):
    """One repository of a registry's snapshot: the unit a poll commits, all or nothing."""

    __table__ = schema.repositories

    id: Mapped[int]
    registry_id: Mapped[int]
    name: Mapped[str]
    first_seen_at: Mapped[datetime]
    fingerprint: Mapped[str | None]
    revision: Mapped[int]


class Tag(Base):
    """One row of a repository's snapshot: the tag and the digest it pointed at when last listed."""

    __table__ = schema.tags

    id: Mapped[int]
    repository_id: Mapped[int]
    name: Mapped[str]
    digest: Mapped[str]
    pushed_at: Mapped[datetime | None]


class Event(Base):
    """The full history of changes, and the outbox the relay publishes from (published_at IS NULL)."""

    __table__ = schema.events

    id: Mapped[int]
    workspace_id: Mapped[int]
    event_id: Mapped[str]
    registry_id: Mapped[int | None]
    registry_name: Mapped[str] = column_property(schema.events.c.registry)
    repository: Mapped[str]
    tag: Mapped[str]
    change: Mapped[str]
    digest: Mapped[str]
    previous_digest: Mapped[str]
    pushed_at: Mapped[datetime | None]
    detected_at: Mapped[datetime]
    cloudevent: Mapped[str]
    published_at: Mapped[datetime | None]
    stream_id: Mapped[str | None]
    #: a `selected` event's policy and the tag selected before it (None and "" for tag events)
    policy: Mapped[str | None]
    previous_tag: Mapped[str]
    #: the owning workspace's name (a stream field and part of the CloudEvent), loaded with the row; a new
    #: event is given it (`watcher.outbox.events.new_event`), it is never written
    workspace: Mapped[str] = column_property(_workspace_name(schema.events))


class PollRun(Base):
    """One poll of one registry (or of some of its repositories): when, why, how it ended, what it cost."""

    __table__ = schema.poll_runs

    id: Mapped[int]
    registry_id: Mapped[int]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str]
    error: Mapped[str]
    repositories: Mapped[int]
    tags: Mapped[int]
    events: Mapped[int]
    requests: Mapped[int]
    ignored: Mapped[int]
    trigger: Mapped[str]
    listed_repositories: Mapped[list[str] | None]


class ApiToken(Base):
    """A bearer token for the HTTP API and console: only its SHA-256 is kept, the token is shown once."""

    __table__ = schema.api_tokens

    id: Mapped[int]
    workspace_id: Mapped[int]
    name: Mapped[str]
    role: Mapped[str]
    token_hash: Mapped[str]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    #: the owning workspace's name, loaded with the row
    workspace: Mapped[str] = column_property(_workspace_name(schema.api_tokens))


class ConsoleSession(Base):
    """A console login (`watcher.web.console.sessions`)."""

    __table__ = schema.console_sessions

    id: Mapped[int]
    session_hash: Mapped[str]
    token_id: Mapped[int]
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    notice: Mapped[str | None]
    workspace_id: Mapped[int | None]


class Counter(Base):
    """A deployment-wide Prometheus counter (`watcher.read.counters`)."""

    __table__ = schema.counters

    metric: Mapped[str]
    labels: Mapped[str]
    value: Mapped[float]
