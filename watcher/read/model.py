"""The read model: every question the CLI, the HTTP API and the console ask of the state database.

One function per question, each a few set-based queries (never one per row), so `watcher status` with a
thousand registries costs the same handful of statements as with one. Lists are paged by keyset — the
cursor is the last row's sort key, opaque to callers — so a page costs O(page) however deep it is, and
rows added while a client pages never make it see a row twice or miss one that existed when it began.

The queries are SQLAlchemy Core on `watcher.schema`'s tables, and take a `Reader`: a Core connection
(the CLI's quick commands, `db.read_scope`) or an ORM session (the API and console, whose requests also
write). Their rows are Core rows with the columns as attributes (the events' `registry` column as
`registry_name`, as on the model), so reading never imports `sqlalchemy.orm` or the ORM classes.

Every question about registries, their polls, repositories, tags and events is asked within one workspace:
each takes `workspace_id` as a required keyword (no default, so no caller can forget it), and an object of
another workspace is a NotFoundError exactly like one that does not exist. Only `/metrics`, which names the
whole deployment, asks across workspaces (`deployment_statuses`, `last_poll_durations`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import and_, func, or_, select, tuple_

from watcher.errors import InputError, NotFoundError
from watcher.read.views import (  # what the quick commands share without SQLAlchemy; re-exported
    RegistryStatus,
    build_details,
    build_statuses,
    rfc3339_or_none,
)
from watcher.read.views import (
    askable as askable,
)
from watcher.read.views import (
    first_line as first_line,
)
from watcher.read.views import (
    missing as missing,
)
from watcher.read.views import (
    poll_json as poll_json,
)
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID
from watcher.schema import api_tokens as API_TOKENS
from watcher.schema import events as EVENTS
from watcher.schema import images as IMAGES
from watcher.schema import listed_images as LISTED_IMAGES
from watcher.schema import poll_runs as POLL_RUNS
from watcher.schema import registries as REGISTRIES
from watcher.schema import repositories as REPOSITORIES
from watcher.schema import tags as TAGS
from watcher.schema import workspaces as WORKSPACES

MAX_PAGE = 1000
#: the largest id a row can have (a signed 64-bit integer on every database): a larger one in a cursor or
#: a `Last-Event-ID` is not one of ours, and a database would refuse to compare with it
MAX_ID = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # where tags without a push time sort
FAILED_OUTCOMES = ("failed", "abandoned")
State = Literal["pending", "ok", "failing"]

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    #: what the queries run on: a Core connection, or an ORM session
    Reader = Connection | Session


# ---- cursors --------------------------------------------------------------------------------------
def encode_cursor(key: Sequence[Any]) -> str:
    """The opaque `next_cursor` for a row's sort key."""
    return base64.urlsafe_b64encode(json.dumps(list(key), default=_iso).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: Callable[[Any], Any]) -> list[Any]:
    """A cursor back into its sort key, each part converted by its kind; anything that is not one of ours
    is one clear error."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(key, list) or len(key) != len(kinds):
            raise ValueError("wrong shape")
        return [kind(part) for kind, part in zip(kinds, key, strict=True)]
    except (ValueError, TypeError, RecursionError, OverflowError):  # RecursionError: nested past the parser
        raise InputError(f"cursor {cursor[:40]!r} is not valid: pass the `next_cursor` of the previous page") from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value:  # no name holds a NUL, and PostgreSQL text cannot
        raise TypeError("not a name")
    return value


def _whole(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise TypeError("not an id")
    return value


def _moment(value: Any) -> datetime:
    """A time with its offset, as UTC (what the database compares); a naive time is not one of ours."""
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError("no offset")
    return moment.astimezone(UTC)  # OverflowError past year 1 or 9999: not one of ours either


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def in_utc(moment: datetime, what: str) -> datetime:
    """A time to compare with the history's: in UTC (a naive one is taken as UTC). One that a UTC clock
    cannot show (`0001-01-01T00:00:00+01:00` is in year 0 there, `9999-12-31T23:59:59-01:00` in 10000) is
    one InputError naming `what`."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InputError(
            f"{what} {moment.isoformat()} is out of range: use a time from year 1 to 9999 in UTC", field=what
        ) from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit {limit} is out of range: use 1 to {MAX_PAGE}")
    return limit


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


# ---- registries -----------------------------------------------------------------------------------
RUN = POLL_RUNS.c
REG = REGISTRIES.c
#: a registry's workspace's name, as a column of a registries query
WORKSPACE_NAME = select(WORKSPACES.c.name).where(WORKSPACES.c.id == REG.workspace_id).scalar_subquery()


def workspace_id_of(reader: Reader, name: str) -> int:
    """The id of the workspace `name` (the CLI's `--workspace`), or NotFoundError naming it: one Core query,
    so the quick commands resolve their workspace without the ORM (none for `default`, which cannot go)."""
    if name == DEFAULT_WORKSPACE:
        return DEFAULT_WORKSPACE_ID
    found = None
    if "\x00" not in name:
        found = reader.execute(select(WORKSPACES.c.id).where(WORKSPACES.c.name == name)).scalar()
    if found is None:
        raise missing_workspace(name)
    return int(found)


def missing_workspace(name: str) -> NotFoundError:
    return NotFoundError(f"no workspace named {name!r}: see `watcher workspace list`")


def schedule_lags(reader: Reader, now: datetime | None = None, *, workspace_id: int | None = None) -> dict[str, float]:
    """How late each workspace's most overdue poll is (or only `workspace_id`'s), by workspace name: seconds
    since the oldest poll that is due (dispatched or not) should have started, 0 when none is. Every
    workspace has one, so one team's lag is never hidden behind another's. One grouped query."""
    query = (
        select(WORKSPACES.c.name, func.min(REG.due_since), func.min(REG.next_poll_at))
        .select_from(WORKSPACES.outerjoin(REGISTRIES, REG.workspace_id == WORKSPACES.c.id))
        .group_by(WORKSPACES.c.id, WORKSPACES.c.name)
    )
    if workspace_id is not None:
        query = query.where(WORKSPACES.c.id == workspace_id)
    now = now or datetime.now(UTC)
    return {name: _lag_since(now, (due, scheduled)) for name, due, scheduled in reader.execute(query)}


def schedule_lag(reader: Reader, *, workspace_id: int, now: datetime | None = None) -> float:
    """How late the workspace's most overdue poll is (`schedule_lags`); another workspace's backlog is not
    its lag."""
    return max(schedule_lags(reader, now, workspace_id=workspace_id).values(), default=0.0)


def deployment_lag(reader: Reader, now: datetime | None = None) -> float:
    """How late the deployment's most overdue poll is, whichever its workspace (0 when none is due)."""
    return max(schedule_lags(reader, now).values(), default=0.0)


def _lag_since(now: datetime, moments: Sequence[datetime | None]) -> float:
    """Seconds from the earliest of `moments` (naive ones are UTC, as SQLite gives them back) to `now`, at
    least 0."""
    known = [aware_utc(moment) for moment in moments if moment is not None]
    return max([0.0, *((now - moment).total_seconds() for moment in known if moment is not None)])


def newest_run_id(*conditions: Any, whole: bool = True, column: Any = RUN.id) -> Any:
    """The id (or another `column`) of a registry's newest registry-wide poll run matching `conditions` (or,
    `whole` False, its newest poll of some repositories only), as a column of a registries query: an index
    walk back from the newest id (`ix_poll_runs_registry_whole_id`, `ix_poll_runs_registry_id_id`), however
    long the history.

    Only registry-wide runs make a registry's state, last poll and last error: a webhook's poll of one
    repository says nothing of the catalog or of the other repositories (`watcher.polling.runs`)."""
    kind = RUN.listed_repositories.is_(None) if whole else RUN.listed_repositories.is_not(None)
    return (
        select(column)
        .where(RUN.registry_id == REG.id, kind, *conditions)
        .order_by(RUN.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def registry_statuses(reader: Reader, names: Sequence[str] | None = None, *, workspace_id: int) -> list[RegistryStatus]:
    """The status of every registry of the workspace (or of `names` there), by name."""
    return _statuses(reader, REG.workspace_id == workspace_id, names)


def deployment_statuses(reader: Reader) -> list[RegistryStatus]:
    """The status of every registry of every workspace: for `/metrics`, which names the whole deployment
    (an operator's or the metrics token's), never for a workspace's reader."""
    return _statuses(reader, None, None)


def _statuses(reader: Reader, scope: Any, names: Sequence[str] | None) -> list[RegistryStatus]:
    """The status of every registry in `scope` (a condition on registries; None: all), or of `names` there,
    by name: four queries in all, whatever their number.
    Its state, last poll and last error come from registry-wide polls only (`newest_run_id`); those runs
    are then read by primary key (a join on the newest ids lets PostgreSQL hash the whole history). The
    counts of every registry are one grouped scan, without a list of a thousand ids to bind."""
    query = select(
        REG.id,
        REG.name,
        WORKSPACE_NAME.label("workspace"),
        REG.provider,
        REG.next_poll_at,
        REG.last_webhook_at,
        newest_run_id(RUN.outcome != "running").label("last_run_id"),
        newest_run_id(RUN.outcome == "ok").label("last_ok_id"),
    ).order_by(REG.name)
    if scope is not None:
        query = query.where(scope)
    if names is not None:
        query = query.where(REG.name.in_(list(names)))
    rows = reader.execute(query).all()
    ids = [row.id for row in rows]
    if not ids:
        return []
    run_ids = {i for row in rows for i in (row.last_run_id, row.last_ok_id) if i is not None}
    runs = {
        run.id: run
        for run in reader.execute(select(RUN.id, RUN.finished_at, RUN.outcome, RUN.error).where(RUN.id.in_(run_ids)))
    }
    repositories = select(REPOSITORIES.c.registry_id, func.count(REPOSITORIES.c.id)).group_by(
        REPOSITORIES.c.registry_id
    )
    tags = (
        select(REPOSITORIES.c.registry_id, func.count(TAGS.c.id))
        .join(TAGS, TAGS.c.repository_id == REPOSITORIES.c.id)
        .group_by(REPOSITORIES.c.registry_id)
    )
    if names is not None:
        repositories, tags = (
            repositories.where(REPOSITORIES.c.registry_id.in_(ids)),
            tags.where(REPOSITORIES.c.registry_id.in_(ids)),
        )
    elif scope is not None:  # the scope's registries, without a list of a thousand ids to bind
        within = select(REG.id).where(scope)
        repositories, tags = (
            repositories.where(REPOSITORIES.c.registry_id.in_(within)),
            tags.where(REPOSITORIES.c.registry_id.in_(within)),
        )
    counts: tuple[dict[int, int], dict[int, int]] = (
        dict(reader.execute(repositories).all()),
        dict(reader.execute(tags).all()),
    )
    return build_statuses(rows, runs, *counts)


def last_poll_durations(reader: Reader) -> dict[tuple[str, str], float]:
    """How long each registry's last registry-wide poll took, in seconds, by (workspace, name): its newest
    run that ended `ok` or `failed` (an abandoned run was cut short by its process or closed long after by the
    next claim, so its length says nothing of the registry; `watcher_poll_duration_seconds` leaves it out
    too). One query, two index walks back per registry (`newest_run_id`); registries never polled are absent."""
    ended = RUN.outcome.in_(("ok", "failed"))
    rows = reader.execute(
        select(
            WORKSPACE_NAME,
            REG.name,
            newest_run_id(ended, column=RUN.started_at),
            newest_run_id(ended, column=RUN.finished_at),
        )
    )
    return {
        (workspace, name): (finished - started).total_seconds()
        for workspace, name, started, finished in rows
        if finished is not None
    }


def registry_names(reader: Reader, *, workspace_id: int) -> list[str]:
    query = select(REG.name).where(REG.workspace_id == workspace_id).order_by(REG.name)
    return list(reader.execute(query).scalars())


def registry_details(reader: Reader, names: Sequence[str] | None = None, *, workspace_id: int) -> list[dict[str, Any]]:
    """Everything about each registry of the workspace (or `names` there) that may be shown — secrets only
    as `set` — with its status: what `registry list/show --json` print and the API returns. Set-based, like
    `registry_statuses`."""
    query = select(REGISTRIES).where(REG.workspace_id == workspace_id).order_by(REG.name)
    if names is not None:
        query = query.where(REG.name.in_(list(names)))
    rows = reader.execute(query).all()
    named = [r.name for r in rows]
    statuses = {s.name: s for s in registry_statuses(reader, named, workspace_id=workspace_id)} if rows else {}
    ids = [r.id for r in rows]
    last_ids = select(newest_run_id()).where(REG.id.in_(ids))
    webhook_ids = select(newest_run_id(whole=False)).where(REG.id.in_(ids))
    last_runs: dict[int, Any] = {}
    webhook_runs: dict[int, Any] = {}
    for run in reader.execute(select(POLL_RUNS).where(RUN.id.in_(last_ids.union(webhook_ids)))):
        (last_runs if run.listed_repositories is None else webhook_runs)[run.registry_id] = run
    return build_details(rows, statuses, last_runs, webhook_runs)


def registry_detail(reader: Reader, name: str, *, workspace_id: int) -> dict[str, Any]:
    """One registry's details, or NotFoundError naming it (in another workspace too)."""
    _registry_row(reader, name, workspace_id)
    (detail,) = registry_details(reader, [name], workspace_id=workspace_id)
    return detail


# ---- images ----------------------------------------------------------------------------------------
#: how `images_page` may order a repository's tags: by name, newest push first, or newest build first
ImageOrder = Literal["name", "pushed_at", "created"]
IMAGE_ORDERS: tuple[ImageOrder, ...] = ("name", "pushed_at", "created")


@dataclass(frozen=True)
class Image:
    """One tag stored now, with the two ways to pull it: by tag (`image`) and by digest (`reference`), and
    what its digest is (`watcher.schema.images`) once the watcher has read it: `kind` None (and `platforms`,
    `size`, `annotations` None too) while it has not; `created` None also when the image says no time."""

    registry: str
    repository: str
    tag: str
    digest: str
    pushed_at: datetime | None
    host: str
    created: datetime | None = None
    platforms: tuple[str, ...] | None = None  # "os/architecture[/variant]"; an index's: each entry's
    size: int | None = None
    annotations: dict[str, str] | None = field(default=None, hash=False)
    kind: str | None = None  # image | index | artifact

    @property
    def image(self) -> str:
        return f"{self.host}/{self.repository}:{self.tag}"

    @property
    def reference(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"

    def as_json(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "pushed_at": rfc3339_or_none(self.pushed_at),
            "image": self.image,
            "reference": self.reference,
            "created": rfc3339_or_none(self.created),
            "platforms": None if self.platforms is None else list(self.platforms),
            "size": self.size,
            "annotations": None if self.annotations is None else dict(self.annotations),
        }


def platform_text(platform: Any) -> str:
    """`os/architecture[/variant]` of one stored platform (`{"os", "architecture", "variant"}`)."""
    found = platform if isinstance(platform, dict) else {}
    parts = [str(found.get("os") or "unknown"), str(found.get("architecture") or "unknown")]
    if found.get("variant"):
        parts.append(str(found["variant"]))
    return "/".join(parts)


def pull_host(url: str) -> str:
    """The host a person pulls from (`docker pull HOST/REPOSITORY:TAG`)."""
    return urlsplit(url).netloc


def _registry_row(reader: Reader, name: str, workspace_id: int) -> Any:
    """The id and URL of the registry named `name` in the workspace, or NotFoundError naming it: a registry
    of another workspace is missing here, exactly like one that does not exist."""
    query = select(REG.id, REG.url).where(REG.workspace_id == workspace_id, REG.name == askable(name))
    row = reader.execute(query).first()
    if row is None:
        raise missing(name)
    return row


def registry_id(reader: Reader, name: str, *, workspace_id: int) -> int:
    """The id of the registry named `name` in the workspace, or NotFoundError naming it."""
    return int(_registry_row(reader, name, workspace_id).id)


def images_page(
    reader: Reader,
    registry: str,
    repository: str | None = None,
    *,
    q: str | None = None,
    order: ImageOrder = "name",
    cursor: str | None = None,
    limit: int = 100,
    workspace_id: int,
) -> Page:
    """The tags stored now for a registry (or one of its repositories), `q` a case-insensitive substring
    of the tag, each with what its digest is; ordered by repository then tag name, newest push first, or
    newest build first (`created`).

    The page of tags is chosen first and only its rows are joined to `images` (a LEFT JOIN on its key: a
    tag whose digest is not read yet is listed all the same), so the metadata costs O(page) lookups however
    big the repository. Newest build is the order of the `newest-build` policy
    (`watcher.policies.strategies`): the creation time, or the push time where the image says none, then the
    push time, then the tag's name (the greatest first, as that policy breaks ties), then its id (unique
    across repositories); tags with neither time come last. Like newest push it sorts the repository's tags,
    and it joins each of them to `images` to do so."""
    check_limit(limit)
    row = _registry_row(reader, registry, workspace_id)
    host = pull_host(row.url)
    repo, tag = REPOSITORIES.c, TAGS.c
    pushed = func.coalesce(tag.pushed_at, EPOCH)
    query = (
        select(
            repo.name.label("repository"),
            tag.name.label("tag"),
            tag.digest.label("digest"),
            tag.pushed_at.label("pushed_at"),
            tag.id.label("id"),
            pushed.label("pushed"),
        )
        .join(TAGS, tag.repository_id == repo.id)
        .where(repo.registry_id == row.id)
    )
    if repository is not None:
        query = query.where(repo.name == repository)
    if q:
        query = query.where(func.lower(tag.name).contains(q.lower(), autoescape=True))
    sort: tuple[Any, ...]
    if order == "created":
        built_by, said_by = IMAGES.alias("built_by"), LISTED_IMAGES.alias("said_by")
        built = func.coalesce(built_by.c.created, said_by.c.created, tag.pushed_at, EPOCH)
        query = (
            query.add_columns(built.label("built"))
            .outerjoin(built_by, built_by.c.digest == tag.digest)
            .outerjoin(said_by, and_(said_by.c.registry_id == row.id, said_by.c.digest == tag.digest))
        )
        sort = (built.desc(), pushed.desc(), tag.name.desc(), tag.id.desc())
        if cursor:
            after = decode_cursor(cursor, _moment, _moment, _text, _whole)
            query = query.where(tuple_(built, pushed, tag.name, tag.id) < tuple(after))  # types of the left
    elif order == "pushed_at":
        sort = (pushed.desc(), tag.id.desc())
        if cursor:
            at, tag_id = decode_cursor(cursor, _moment, _whole)
            query = query.where(or_(pushed < at, and_(pushed == at, tag.id < tag_id)))
    else:
        sort = (repo.name, tag.name)
        if cursor:
            repo_name, tag_name = decode_cursor(cursor, _text, _text)
            query = query.where(or_(repo.name > repo_name, and_(repo.name == repo_name, tag.name > tag_name)))
    page = query.order_by(*sort).limit(limit + 1).subquery("page")
    image, said = IMAGES.c, LISTED_IMAGES.c
    # the same order again, on the page's own columns: `key` names them, the cursor is their values
    key = {"created": ("built", "pushed", "tag", "id"), "pushed_at": ("pushed", "id")}.get(order, ("repository", "tag"))
    resort = [page.c[name] if order == "name" else page.c[name].desc() for name in key]
    # the verified row first (`images`), each of its empty facts from what this registry's provider said
    joined = (
        select(
            page,
            func.coalesce(image.kind, said.kind).label("kind"),
            func.coalesce(image.platforms, said.platforms).label("platforms"),
            func.coalesce(image.created, said.created).label("created"),
            func.coalesce(image.size, said.size).label("size"),
            image.annotations,
        )
        .outerjoin(IMAGES, image.digest == page.c.digest)
        .outerjoin(LISTED_IMAGES, and_(said.registry_id == row.id, said.digest == page.c.digest))
        .order_by(*resort)
    )
    rows = reader.execute(joined).all()
    items = [_image(registry, host, r) for r in rows[:limit]]
    next_cursor = encode_cursor([getattr(rows[limit - 1], name) for name in key]) if len(rows) > limit else None
    return Page(items, next_cursor)


def _image(registry: str, host: str, row: Any) -> Image:
    """A row of `images_page` as an Image: the metadata's columns are all None when nothing is known of its
    digest (a provider may say some facts and not others)."""
    if row.kind is None and row.created is None and row.platforms is None and row.size is None:
        return Image(registry, row.repository, row.tag, row.digest, row.pushed_at, host)
    return Image(
        registry,
        row.repository,
        row.tag,
        row.digest,
        row.pushed_at,
        host,
        created=row.created,
        platforms=tuple(platform_text(p) for p in row.platforms or ()),
        size=row.size,
        annotations={str(k): str(v) for k, v in (row.annotations or {}).items()},
        kind=row.kind,
    )


# ---- repositories and polls ------------------------------------------------------------------------
@dataclass(frozen=True)
class RepositorySummary:
    name: str
    tags: int
    last_pushed_at: datetime | None
    first_seen_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tags": self.tags,
            "last_pushed_at": rfc3339_or_none(self.last_pushed_at),
            "first_seen_at": rfc3339_or_none(self.first_seen_at),
        }


def repositories_page(
    reader: Reader,
    registry: str,
    *,
    q: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
    workspace_id: int,
) -> Page:
    """A registry's repositories by name, with their tag count and newest push; `q` a substring of the name."""
    check_limit(limit)
    row = _registry_row(reader, registry, workspace_id)
    repo, tag = REPOSITORIES.c, TAGS.c
    query = (
        select(repo.name, func.count(tag.id), func.max(tag.pushed_at), repo.first_seen_at)
        .join(TAGS, tag.repository_id == repo.id, isouter=True)
        .where(repo.registry_id == row.id)
        .group_by(repo.id, repo.name, repo.first_seen_at)
    )
    if q:
        query = query.where(func.lower(repo.name).contains(q.lower(), autoescape=True))
    if cursor:
        (after,) = decode_cursor(cursor, _text)
        query = query.where(repo.name > after)
    rows = reader.execute(query.order_by(repo.name).limit(limit + 1)).all()
    items = [RepositorySummary(r[0], r[1], aware_utc(r[2]), r[3]) for r in rows[:limit]]
    return Page(items, encode_cursor([rows[limit - 1][0]]) if len(rows) > limit else None)


def aware_utc(moment: datetime | None) -> datetime | None:
    """An aggregate (max) comes back without the column type's processing: naive UTC on SQLite."""
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite hands back text for an aggregate of a datetime column
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def polls_page(
    reader: Reader, registry: str, *, cursor: str | None = None, limit: int = 100, workspace_id: int
) -> Page:
    """A registry's poll history, newest first: its registry-wide polls and its webhooks' repository polls
    (rows with the columns of `poll_runs` as attributes)."""
    check_limit(limit)
    query = select(POLL_RUNS).where(RUN.registry_id == registry_id(reader, registry, workspace_id=workspace_id))
    if cursor:
        (before,) = decode_cursor(cursor, _whole)
        query = query.where(RUN.id < before)
    rows = reader.execute(query.order_by(RUN.id.desc()).limit(limit + 1)).all()
    return Page(list(rows[:limit]), encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None)


# ---- events ---------------------------------------------------------------------------------------
#: an event's columns, named as the model's attributes (its `registry` column is `registry_name`)
EVENT_COLUMNS = (
    *(column.label("registry_name") if column.name == "registry" else column for column in EVENTS.c),
    # the owning workspace's name, a field of every event (`watcher.outbox.events.fields_of`)
    select(WORKSPACES.c.name)
    .where(WORKSPACES.c.id == EVENTS.c.workspace_id)
    .correlate_except(WORKSPACES)
    .scalar_subquery()
    .label("workspace"),
)


@dataclass(frozen=True)
class EventFilters:
    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    change: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def events_page(
    reader: Reader,
    filters: EventFilters = EventFilters(),
    *,
    order: Literal["desc", "asc"] = "desc",
    cursor: str | None = None,
    limit: int = 100,
    workspace_id: int,
) -> Page:
    """The workspace's event history, newest first (or oldest first), keyset-paged on the history id; rows
    with the attributes of `watcher.models.Event`. Every filter walks an index that leads with the
    workspace (`ix_events_workspace_*`), so another workspace's events cost nothing to skip."""
    check_limit(limit)
    event = EVENTS.c
    query = select(*EVENT_COLUMNS).where(event.workspace_id == workspace_id)
    for column, value in (
        (event.registry, filters.registry),
        (event.repository, filters.repository),
        (event.tag, filters.tag),
        (event.change, filters.change),
    ):
        if value:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(event.detected_at >= filters.since)
    if filters.until is not None:
        query = query.where(event.detected_at < filters.until)
    if cursor:
        (after,) = decode_cursor(cursor, _whole)
        query = query.where(event.id < after if order == "desc" else event.id > after)
    query = query.order_by(event.id.desc() if order == "desc" else event.id.asc()).limit(limit + 1)
    rows = reader.execute(query).all()
    next_cursor = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return Page(list(rows[:limit]), next_cursor)


def newest_event_id(reader: Reader, *, workspace_id: int) -> int:
    """The history id of the workspace's newest event (0 when there is none): where its live view starts."""
    query = select(func.max(EVENTS.c.id)).where(EVENTS.c.workspace_id == workspace_id)
    return int(reader.execute(query).scalar() or 0)


# ---- API tokens -----------------------------------------------------------------------------------
def api_tokens(reader: Reader) -> list[Any]:
    """Every token by name (rows of `api_tokens`: only hashes, never a token)."""
    return list(reader.execute(select(API_TOKENS).order_by(API_TOKENS.c.name)).all())


def token_active(row: Any, now: datetime) -> bool:
    """Neither revoked nor expired (`row`: a token's row or model)."""
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
