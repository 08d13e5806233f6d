"""The state database: registries, repositories, tag snapshots, the event history (the outbox) and polls."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: the longest digest stored: `algorithm:encoded` is validated to fit (sha512 needs 135)
DIGEST_LENGTH = 255


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, and comparisons must agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Registry(Base):
    """One registered registry: how to reach it, what to watch, and when it is next due."""

    __tablename__ = "registries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    url: Mapped[str] = mapped_column(String(500))
    credentials: Mapped[str] = mapped_column(Text, default="")  # Fernet token of a JSON object
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=300)
    emit_existing: Mapped[bool] = mapped_column(Boolean, default=False)
    baselined: Mapped[bool] = mapped_column(Boolean, default=False)
    next_poll_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: the slot of a poll dispatched but not yet started (how late it is, is the schedule lag)
    due_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: the webhook receiver's secret, Fernet-encrypted like the credentials (`watcher.hooks.receivers`)
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_format: Mapped[str | None] = mapped_column(String(30), nullable=True)
    webhook_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_webhook_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Repository(Base):
    """One repository of a registry's snapshot: the unit a poll commits, all or nothing."""

    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("registry_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registry_id: Mapped[int] = mapped_column(ForeignKey("registries.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(500))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: a hash over the stored tag -> digest pairs (`watcher.polling.snapshot.fingerprint`): a listing with the same
    #: one changes nothing, so its tag rows are not read; NULL (a row from before 0004) is re-diffed once
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: bumped by every commit of this repository with a compare-and-set, so that two polls never both
    #: commit against one snapshot of it
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Tag(Base):
    """One row of a repository's snapshot: the tag and the digest it pointed at when last listed."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("repository_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Event(Base):
    """The full history of changes, and the outbox the relay publishes from (published_at IS NULL)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_unpublished", "published_at", "id"),
        Index("ix_events_registry_repo", "registry", "repository"),
        # the history's filters, each page newest first by id (migration 0004)
        Index("ix_events_registry_id", "registry", "id"),
        Index("ix_events_repository_id", "repository", "id"),
        Index("ix_events_tag_id", "tag", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # detection order
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    registry_id: Mapped[int | None] = mapped_column(ForeignKey("registries.id", ondelete="SET NULL"), nullable=True)
    registry_name: Mapped[str] = mapped_column("registry", String(200))
    repository: Mapped[str] = mapped_column(String(500))
    tag: Mapped[str] = mapped_column(String(200))
    change: Mapped[str] = mapped_column(String(10))
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    previous_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), default="")
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cloudevent: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stream_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class PollRun(Base):
    """One poll of one registry (or of some of its repositories): when, why, how it ended, what it cost.

    Its registry-wide runs (`listed_repositories IS NULL`: the runs a registry's health is read from) have
    a partial index of their own, `ix_poll_runs_registry_whole_id (registry_id, id)`, made by migration
    0007 and not declared here: an index with `postgresql_where` loads SQLAlchemy's PostgreSQL dialect
    (~40 ms) into every process that imports the models, SQLite's too, and nothing builds the schema from
    these classes (the migrations do; tests/test_db.py checks the index is there)."""

    __tablename__ = "poll_runs"
    __table_args__ = (Index("ix_poll_runs_registry_id_id", "registry_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registry_id: Mapped[int] = mapped_column(ForeignKey("registries.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(20), default="running")  # running | ok | failed | abandoned
    error: Mapped[str] = mapped_column(Text, default="")
    repositories: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[int] = mapped_column(Integer, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    ignored: Mapped[int] = mapped_column(Integer, default=0)  # names the registry sent that are not valid OCI
    trigger: Mapped[str] = mapped_column(String(10), default="schedule")  # schedule | webhook | manual
    #: the repositories a poll of some repositories only listed (a webhook's); None for a registry-wide poll
    listed_repositories: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class ApiToken(Base):
    """A bearer token for the HTTP API and console: only its SHA-256 is kept, the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    role: Mapped[str] = mapped_column(String(10))  # reader | admin
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ConsoleSession(Base):
    """A console login: only the SHA-256 of its cookie's random id is kept (`watcher.web.console.sessions`), with
    the token it was opened with, so revoking or expiring that token ends it too."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: written at most once a minute, so that reading pages does not write on every request
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: the one-time notice the next page shows ("a poll of 'r1' is queued")
    notice: Mapped[str | None] = mapped_column(Text, nullable=True)


class Counter(Base):
    """A deployment-wide Prometheus counter: every worker adds to it in the transaction that did the counted
    work, so `/metrics` served by any process reports the whole deployment, and a restart loses nothing."""

    __tablename__ = "counters"

    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(500), primary_key=True)  # JSON object, keys sorted
    value: Mapped[float] = mapped_column(Float, default=0.0)
