"""The state database's tables, in SQLAlchemy Core: what the read model queries, without the ORM.

The schema is owned by the Alembic migrations; these declarations say what the code reads and writes.
`watcher.models` maps its classes onto these same tables (the ORM, for the paths that write), so a table
is declared once. Reading (`watcher.read.model`: the CLI's quick commands, the API, the console) needs
only these: `sqlalchemy.orm` and the declarative classes (~60 ms of a command's start) are never imported
on that path (tests/cli/test_cli_imports.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    any_,
    bindparam,
    false,
)
from sqlalchemy.engine import Dialect

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

#: values per `IN (...)` where a list of values is not one parameter (`matching`)
IN_CHUNK = 500


def matching(bind: Session | Connection, query: Any, column: Any, values: Sequence[str]) -> list[Any]:
    """`query` limited to rows whose `column` is one of `values` (digests, names): one array parameter on
    PostgreSQL (no long IN list to compile), else statements of IN_CHUNK values each; none for no values."""
    if not values:
        return []
    connection = bind if not hasattr(bind, "get_bind") else bind.get_bind()
    if connection.dialect.name == "postgresql":
        return [query.where(column == any_(bindparam("values", list(values))))]
    return [query.where(column.in_(values[start : start + IN_CHUNK])) for start in range(0, len(values), IN_CHUNK)]


#: the longest digest stored: `algorithm:encoded` is validated to fit (sha512 needs 135)
DIGEST_LENGTH = 255

metadata = MetaData()


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


def _id() -> Column[int]:
    return Column("id", Integer, primary_key=True)


def _required(name: str, *args: Any, **options: Any) -> Column[Any]:
    return Column(name, *args, nullable=False, **options)


def _optional(name: str, *args: Any, **options: Any) -> Column[Any]:
    return Column(name, *args, nullable=True, **options)


#: the workspace everything that existed before workspaces belongs to (migration 0011); it cannot be deleted
DEFAULT_WORKSPACE_ID = 1
DEFAULT_WORKSPACE = "default"

#: one team's workspace: it owns registries (with their snapshots, polls, events and webhooks) and tokens,
#: and its quotas bound what it may register and how much of the worker pool it may hold (None: no limit)
workspaces = Table(
    "workspaces",
    metadata,
    _id(),
    _required("name", String(63), unique=True),
    _optional("max_registries", Integer),
    _optional("min_interval_seconds", Integer),
    _optional("max_concurrent_polls", Integer),
    _required("created_at", UTCDateTime, default=utcnow),
)


def _workspace_id(table: str) -> Column[int]:
    """The owning workspace; its rows go with it."""
    return _required(
        "workspace_id",
        Integer,
        ForeignKey("workspaces.id", name=f"fk_{table}_workspace", ondelete="CASCADE"),
        default=DEFAULT_WORKSPACE_ID,
        server_default=str(DEFAULT_WORKSPACE_ID),
    )


#: one registered registry: how to reach it, what to watch, and when it is next due
registries = Table(
    "registries",
    metadata,
    _id(),
    _workspace_id("registries"),
    _required("name", String(200)),
    _required("provider", String(20)),
    _required("url", String(500)),
    _required("credentials", Text, default=""),  # Fernet token of a JSON object
    _required("options", JSON, default=dict),
    _required("interval_seconds", Integer, default=300),
    _required("emit_existing", Boolean, default=False),
    _required("baselined", Boolean, default=False),
    _required("next_poll_at", UTCDateTime, default=utcnow),
    _optional("lease_owner", String(100)),
    _optional("lease_until", UTCDateTime),
    # the slot of a poll dispatched but not yet started (how late it is, is the schedule lag)
    _optional("due_since", UTCDateTime),
    _required("created_at", UTCDateTime, default=utcnow),
    # the webhook receiver's secret, Fernet-encrypted like the credentials (`watcher.hooks.receivers`)
    _optional("webhook_secret", Text),
    _optional("webhook_format", String(30)),
    _required("webhook_enabled", Boolean, default=False, server_default=false()),
    _optional("last_webhook_at", UTCDateTime),
    UniqueConstraint("workspace_id", "name", name="uq_registries_workspace_name"),
)

#: one repository of a registry's snapshot: the unit a poll commits, all or nothing
repositories = Table(
    "repositories",
    metadata,
    _id(),
    _required("registry_id", Integer, ForeignKey("registries.id", ondelete="CASCADE")),
    _required("name", String(500)),
    _required("first_seen_at", UTCDateTime, default=utcnow),
    # a hash over the stored tag -> digest pairs (`watcher.polling.snapshot.fingerprint`): a listing with the same
    # one changes nothing, so its tag rows are not read; NULL (a row from before 0004) is re-diffed once
    _optional("fingerprint", String(64)),
    # bumped by every commit of this repository with a compare-and-set, so that two polls never both
    # commit against one snapshot of it
    _required("revision", Integer, default=0, server_default="0"),
    UniqueConstraint("registry_id", "name"),
)

#: one row of a repository's snapshot: the tag and the digest it pointed at when last listed
tags = Table(
    "tags",
    metadata,
    _id(),
    _required("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE")),
    _required("name", String(200)),
    _required("digest", String(DIGEST_LENGTH)),
    _optional("pushed_at", UTCDateTime),
    UniqueConstraint("repository_id", "name"),
)

#: the full history of changes, and the outbox the relay publishes from (published_at IS NULL); its
#: column `registry` is the model's `registry_name`
events = Table(
    "events",
    metadata,
    _id(),  # detection order
    _workspace_id("events"),
    _required("event_id", String(64), unique=True),
    _optional("registry_id", Integer, ForeignKey("registries.id", ondelete="SET NULL")),
    _required("registry", String(200)),
    _required("repository", String(500)),
    _required("tag", String(200)),
    _required("change", String(10)),
    _required("digest", String(DIGEST_LENGTH)),
    _required("previous_digest", String(DIGEST_LENGTH), default=""),
    _optional("pushed_at", UTCDateTime),
    _required("detected_at", UTCDateTime),
    _required("cloudevent", Text),
    _optional("published_at", UTCDateTime),
    _optional("stream_id", String(40)),
    # a `selected` event's policy, and the tag it selected before (migration 0013); tag events have neither
    _optional("policy", String(63)),
    _required("previous_tag", String(200), default="", server_default=""),
    Index("ix_events_unpublished", "published_at", "id"),
    Index("ix_events_registry_repo", "registry", "repository"),
    # the history's filters within a workspace, each page newest first by id (migrations 0004, 0011)
    Index("ix_events_workspace_id", "workspace_id", "id"),
    Index("ix_events_workspace_registry_id", "workspace_id", "registry", "id"),
    Index("ix_events_workspace_repository_id", "workspace_id", "repository", "id"),
    Index("ix_events_workspace_tag_id", "workspace_id", "tag", "id"),
    Index("ix_events_workspace_policy_id", "workspace_id", "policy", "id"),
)

#: one poll of one registry (or of some of its repositories): when, why, how it ended, what it cost.
#: Its registry-wide runs (`listed_repositories IS NULL`: the runs a registry's health is read from) have a
#: partial index of their own, `ix_poll_runs_registry_whole_id (registry_id, id)`, made by migration 0007
#: and not declared here: an index with `postgresql_where` loads SQLAlchemy's PostgreSQL dialect (~40 ms)
#: into every process that imports the tables, SQLite's too, and nothing builds the schema from these
#: declarations (the migrations do; tests/test_db.py checks the index is there).
poll_runs = Table(
    "poll_runs",
    metadata,
    _id(),
    _required("registry_id", Integer, ForeignKey("registries.id", ondelete="CASCADE"), index=True),
    _required("started_at", UTCDateTime, default=utcnow),
    _optional("finished_at", UTCDateTime),
    _required("outcome", String(20), default="running"),  # running | ok | failed | abandoned
    _required("error", Text, default=""),
    _required("repositories", Integer, default=0),
    _required("tags", Integer, default=0),
    _required("events", Integer, default=0),
    _required("requests", Integer, default=0),
    _required("ignored", Integer, default=0),  # names the registry sent that are not valid OCI
    _required("trigger", String(10), default="schedule"),  # schedule | webhook | manual
    # the repositories a poll of some repositories only listed (a webhook's); None for a registry-wide poll
    _optional("listed_repositories", JSON(none_as_null=True)),
    Index("ix_poll_runs_registry_id_id", "registry_id", "id"),
)

#: a bearer token for the HTTP API and console: only its SHA-256 is kept, the token is shown once
api_tokens = Table(
    "api_tokens",
    metadata,
    _id(),
    _workspace_id("api_tokens"),  # an operator's: the workspace it acts in when none is named
    _required("name", String(63)),
    _required("role", String(10)),  # reader | admin | operator
    _required("token_hash", String(64), unique=True),
    _required("created_at", UTCDateTime, default=utcnow),
    _optional("expires_at", UTCDateTime),
    _optional("revoked_at", UTCDateTime),
    _optional("last_used_at", UTCDateTime),
    UniqueConstraint("workspace_id", "name", name="uq_api_tokens_workspace_name"),
)

#: a console login: only the SHA-256 of its cookie's random id is kept (`watcher.web.console.sessions`), with
#: the token it was opened with, so revoking or expiring that token ends it too
console_sessions = Table(
    "console_sessions",
    metadata,
    _id(),
    _required("session_hash", String(64), unique=True),
    _required("token_id", Integer, ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True),
    _required("created_at", UTCDateTime, default=utcnow),
    # written at most once a minute, so that reading pages does not write on every request
    _required("last_used_at", UTCDateTime, default=utcnow),
    # the one-time notice the next page shows ("a poll of 'r1' is queued")
    _optional("notice", Text),
    # the workspace an operator's console shows (None: its token's own)
    _optional(
        "workspace_id", Integer, ForeignKey("workspaces.id", name="fk_console_sessions_workspace", ondelete="SET NULL")
    ),
)

#: a deployment-wide Prometheus counter: every worker adds to it in the transaction that did the counted
#: work, so `/metrics` served by any process reports the whole deployment, and a restart loses nothing
counters = Table(
    "counters",
    metadata,
    Column("metric", String(64), primary_key=True),
    Column("labels", String(500), primary_key=True),  # JSON object, keys sorted
    _required("value", Float, default=0.0),
)

#: what an image is, once per digest for the whole installation (`watcher.registry.imagemeta`): content-addressed,
#: so a digest already here costs no request, whichever registry or workspace serves it next. Every value is
#: read from bytes verified against the digest (the manifest) or a digest inside them (the config blob).
images = Table(
    "images",
    metadata,
    Column("digest", String(DIGEST_LENGTH), primary_key=True),
    _required("kind", String(10)),  # image | index | artifact
    _required("platforms", JSON, default=list),  # [{"os", "architecture", "variant"}], an index's: each entry's
    _optional("created", UTCDateTime),
    _required("size", BigInteger, default=0),  # config + layers; an index: its manifests' sizes as listed
    _required("annotations", JSON, default=dict),  # the OCI keys of `imagemeta.ANNOTATION_KEYS` only, capped
    _required("fetched_at", UTCDateTime, default=utcnow),
)

#: what a provider's own API says of a digest one registry lists (ECR's `describeImages`, ACR's manifest
#: properties, Docker Hub's tag images, Google's `tags/list`), where it says it: not read from bytes verified
#: against the digest, so believed for that registry alone, and only where `images` says nothing (migration 0015)
listed_images = Table(
    "listed_images",
    metadata,
    Column(
        "registry_id",
        Integer,
        ForeignKey("registries.id", name="fk_listed_images_registry", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("digest", String(DIGEST_LENGTH), primary_key=True),
    _optional("kind", String(10)),  # image | index | artifact
    _optional("platforms", JSON),  # as `images.platforms`
    _optional("created", UTCDateTime),  # the image's build time (Google's timeCreatedMs), never a push time
    _optional("size", BigInteger),
    _required("said_at", UTCDateTime, default=utcnow),
)

#: which image of one repository a workspace deploys (`watcher.policies`): the strategy as its options say it
#: (`strategies.Policy`), and its current selection, compared with in the transaction that changes the
#: repository so that a `selected` event is written only when it changed (migration 0013)
policies = Table(
    "policies",
    metadata,
    _id(),
    _workspace_id("policies"),
    _required("name", String(63)),
    _required("registry_id", Integer, ForeignKey("registries.id", name="fk_policies_registry", ondelete="CASCADE")),
    _required("repository", String(500)),
    _required("strategy", String(20)),
    _required("argument", String(256), default=""),
    _required("filter", Text, default=""),
    _required("extract", String(256), default=""),
    _required("prerelease", Boolean, default=False),
    _required("created_at", UTCDateTime, default=utcnow),
    _required("updated_at", UTCDateTime, default=utcnow),
    _optional("selected_tag", String(200)),
    _optional("selected_digest", String(DIGEST_LENGTH)),
    _optional("selected_at", UTCDateTime),  # since when the selection is what it is
    _required("considered", Integer, default=0),
    _required("ignored", Integer, default=0),
    _optional("evaluated_at", UTCDateTime),
    UniqueConstraint("workspace_id", "name", name="uq_policies_workspace_name"),
    Index("ix_policies_registry_repository", "registry_id", "repository"),
)

#: where a workspace's events are delivered (`watcher.delivery`): an endpoint, a wire format, filters
#: (`registry`, `repository` glob, `changes`, `policy`; JSON) and a Fernet-encrypted secret that signs (or,
#: for GitHub, authorizes) each request; a lease so that one worker at a time delivers it, in order
subscriptions = Table(
    "subscriptions",
    metadata,
    _id(),
    _workspace_id("subscriptions"),
    _required("name", String(63)),
    _required("url", String(2000)),
    _required("format", String(30)),
    _required("filters", JSON, default=dict),
    _required("secret", Text),
    _required("created_at", UTCDateTime, default=utcnow),
    _optional("lease_owner", String(100)),
    _optional("lease_until", UTCDateTime),
    _optional("last_delivered_at", UTCDateTime),
    _optional("last_failed_at", UTCDateTime),
    _required("last_error", Text, default="", server_default=""),
    UniqueConstraint("workspace_id", "name", name="uq_subscriptions_workspace_name"),
)

#: one event for one subscription (migration 0014): `pending` until accepted (`delivered`) or given up on
#: (`dead`); written by the relay as it publishes the event, tried in id order per subscription
deliveries = Table(
    "deliveries",
    metadata,
    _id(),
    _required(
        "subscription_id",
        Integer,
        ForeignKey("subscriptions.id", name="fk_deliveries_subscription", ondelete="CASCADE"),
    ),
    _required("event_id", Integer, ForeignKey("events.id", name="fk_deliveries_event", ondelete="CASCADE")),
    _required("state", String(12)),  # pending | delivered | dead
    _required("attempts", Integer, default=0),
    _required("created_at", UTCDateTime, default=utcnow),
    _required("next_attempt_at", UTCDateTime, default=utcnow),
    _optional("finished_at", UTCDateTime),
    _optional("last_status", Integer),
    _required("last_error", Text, default="", server_default=""),
    UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_subscription_event"),
    Index("ix_deliveries_subscription_state_id", "subscription_id", "state", "id"),
    Index("ix_deliveries_state_next_attempt", "state", "next_attempt_at"),
)
