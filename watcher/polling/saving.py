"""Committing listed repositories: each one's snapshot changes and events together, in bulk, all or nothing.

A group of repositories (up to `watcher.polling.pipeline`'s chunk) is written in one transaction with a handful of
statements whatever its size: one compare-and-set UPDATE of the stored repositories' revisions (executemany),
one SELECT of their tag rows, one statement each for the tags inserted and updated (`watcher.polling.bulk.insert_rows`,
`update_rows`: executemany, or on PostgreSQL one `unnest()` of arrays), one DELETE per
chunk of ids, one multi-row INSERT of the events and one of new repositories. The compare-and-set is what
keeps two polls from both committing against one repository's snapshot: a repository stored when the poll
began must still be at the revision the poll read before listing it. When any repository of a group lost
that race (or PostgreSQL broke a deadlock by aborting the group), the group is rolled back and retried one
repository at a time, so only the one that lost gives up; it is saved when the other poll stored exactly
what this one saw, and otherwise it is reported and listed again next poll — never diffed against a
snapshot newer than its listing (that would invent events).

A group's stored tag rows may be read before its transaction (`read_before`, while its new digests' image
metadata is fetched: `watcher.polling.images.describe`) and kept on each `Listed`: the compare-and-set then
proves that no commit touched the repository since the poll read its revision, before those rows were read,
so they are still its rows; a repository that lost the race is never diffed against them (`_resolve`). Each
tag event's CloudEvent carries what `images` knows of its digest, read once for the whole group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from watcher.db import session_scope
from watcher.diff import Change, ChangeKind, TagState
from watcher.errors import StateError
from watcher.models import Event, Registry, Repository, Tag, utcnow
from watcher.outbox.events import NO_IMAGE, ImageFacts, event_rows, new_event
from watcher.outbox.imagefacts import known_facts
from watcher.policies.evaluation import reevaluate
from watcher.polling.bulk import insert_rows, update_rows
from watcher.polling.snapshot import IN_CHUNK, Stored, TagRow, stored_rows
from watcher.read import counters, pollmetrics
from watcher.registrations.keys import registry_key
from watcher.registrations.scope import Scope
from watcher.schema import DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_ID

if TYPE_CHECKING:
    from watcher.registrations.lookup import StoredRegistry

TAGS = cast(Table, Tag.__table__)
REPOSITORIES = cast(Table, Repository.__table__)
EVENTS = cast(Table, Event.__table__)
CONFLICT = "changed by another poll meanwhile; it is listed again next poll"


@dataclass
class Listed:
    """One repository as listed, waiting to be committed. No tags: it is gone (its stored tags are removed)."""

    name: str
    tags: dict[str, TagState]
    fingerprint: str
    #: the repository as stored before it was listed; None if it was not
    stored: Stored | None
    #: its stored rows and how the listing compares with them, read before its transaction (`read_before`);
    #: None: read in the transaction
    before: Before | None = None
    #: what `images` holds of the digests of the group's changes (`watcher.polling.images.describe`); None:
    #: read in the transaction
    images: Mapping[str, ImageFacts] | None = None


@dataclass(frozen=True)
class Before:
    """One repository's stored rows (those `compare` read) and its changes and unwanted rows against them."""

    rows: Mapping[str, TagRow]
    changes: list[Change]
    unwanted: list[int]


@dataclass(frozen=True)
class Target:
    """Where a poll's repositories are committed, and whether a repository new to the snapshot emits."""

    registry_id: int
    #: the registry's plain name (an event's `registry` field), never its key (`key` is)
    registry: str
    url: str
    scope: Scope
    #: the registry is past its baseline (or emits existing tags): a new repository's tags are `added`
    emit_new: bool
    #: the workspace that owns the registry, and so its events (its id, and its name for the events' fields)
    workspace_id: int = DEFAULT_WORKSPACE_ID
    workspace: str = DEFAULT_WORKSPACE

    @classmethod
    def of(cls, row: StoredRegistry, url: str, scope: Scope, emit_new: bool) -> Target:
        """The target of the registry `row`, in its workspace (every poll's way to build one)."""
        return cls(row.id, row.name, url, scope, emit_new, workspace_id=row.workspace_id, workspace=row.workspace)

    @property
    def key(self) -> str:
        """The registry's key (`watcher.registrations.keys`), for log lines and errors that name it."""
        return registry_key(self.workspace, self.registry)


@dataclass
class Saved:
    """What committing one repository did: its events, or why it was not saved (`conflict`)."""

    repository: str
    events: list[Event] = field(default_factory=list)
    conflict: str = ""


class Conflict(Exception):
    """A repository of the group was committed by another poll since this one read it."""


def save(engine: Engine, target: Target, group: list[Listed]) -> list[Saved]:
    """Commit the group in one transaction; on a conflict, one repository at a time."""
    try:
        with session_scope(engine) as session:
            return write_changes(session, target, group)
    except (Conflict, IntegrityError, DBAPIError) as exc:
        if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError) and not _lost_race(exc):
            raise
        if len(group) == 1:
            return [_resolve(engine, target, group[0])]
        return [saved for item in group for saved in save(engine, target, [item])]


def _lost_race(exc: DBAPIError) -> bool:
    """PostgreSQL chose this transaction as a deadlock's victim (or a serialization failure's)."""
    return getattr(exc.orig, "sqlstate", None) in {"40P01", "40001"}


def _resolve(engine: Engine, target: Target, item: Listed) -> Saved:
    """After losing the race for one repository: saved if the snapshot now holds what was listed."""
    with session_scope(engine) as session:
        if session.get(Registry, target.registry_id) is None:
            raise StateError(f"registry {target.key!r} was removed during the poll")
        row = session.execute(
            select(Repository.fingerprint).where(
                Repository.registry_id == target.registry_id, Repository.name == item.name
            )
        ).first()
    same = item.fingerprint == row.fingerprint if row is not None else not item.tags
    return Saved(item.name) if same else Saved(item.name, conflict=CONFLICT)


def write_changes(session: Session, target: Target, group: list[Listed]) -> list[Saved]:
    """The group's snapshot changes, events and event counters, in the session's transaction."""
    now = utcnow()
    # rows are locked in one order (ids, then names), so two polls' groups cannot deadlock on them
    stored = sorted((item for item in group if item.stored is not None), key=_id)
    new = sorted((item for item in group if item.stored is None and item.tags), key=lambda item: item.name)
    _claim(session, stored)  # from here on, rows read before the transaction are the rows (see above)
    compared = _compared(session, target, stored, new)
    facts = _facts(session, target, group, [c.digest for item in group for c in compared[item.name].changes])
    writes = Writes()
    saved: list[Saved] = []
    for item in stored:
        before = compared[item.name]
        writes.deleted += before.unwanted  # out of scope now: left silently
        if item.tags:
            writes.add(_id(item), before.changes, before.rows)
        else:
            writes.gone.append(_id(item))  # its tags go with it
        saved.append(Saved(item.name, _events(target, before.changes, now, facts)))
    for item, repo_id in zip(new, _insert_repositories(session, target, new, now), strict=True):
        changes = compared[item.name].changes
        writes.add(repo_id, changes, {})
        saved.append(Saved(item.name, _events(target, changes, now, facts) if target.emit_new else []))
    writes.execute(session)
    saved.sort(key=lambda one: one.repository)  # the group's events by repository, then tag
    _select(session, target, group, saved, now, compared)
    events = [event for s in saved for event in s.events]
    if events:
        insert_rows(session, EVENTS, event_rows(events))
        counters.add(session, pollmetrics.committed(target.key, (e.change for e in events)))
    return saved


def read_before(session: Session, target: Target, group: list[Listed]) -> dict[str, str]:
    """Outside the group's transaction: each repository's stored rows and its changes against them, kept on
    it (`Listed.before`); the digests that its events will name as new (added, or a tag moved to them),
    each with a repository that serves it. A repository new to a snapshot that does not emit yet names none."""
    stored = [item for item in group if item.stored is not None]
    rows = stored_rows(session, (_id(item) for item in stored))
    new: dict[str, str] = {}
    for item in group:
        item.before = _compare(item, rows[_id(item)] if item.stored is not None else {}, target)
        if item.stored is not None or target.emit_new:
            for change in item.before.changes:
                if change.kind is not ChangeKind.REMOVED:
                    new.setdefault(change.digest, item.name)
    return new


def _compare(item: Listed, rows: Mapping[str, TagRow], target: Target) -> Before:
    changes, unwanted = compare(item.name, rows, item.tags, target.scope.wants_tag)
    return Before(rows, changes, unwanted)


def _compared(session: Session, target: Target, stored: list[Listed], new: list[Listed]) -> dict[str, Before]:
    """Each repository's rows and changes: as read before the transaction, or read now (one query a chunk)."""
    found = {item.name: item.before for item in [*stored, *new] if item.before is not None}
    unread = [item for item in stored if item.before is None]
    rows = stored_rows(session, (_id(item) for item in unread)) if unread else {}
    found |= {item.name: _compare(item, rows[_id(item)], target) for item in unread}
    found |= {item.name: _compare(item, {}, target) for item in new if item.before is None}
    return found


def _facts(session: Session, target: Target, group: list[Listed], digests: list[str]) -> Mapping[str, ImageFacts]:
    """What is known of `digests`' images: as `describe` read it for the group, else in one lookup
    (`watcher.outbox.imagefacts`)."""
    if not digests:
        return {}
    described = {id(item.images): item.images for item in group if item.images is not None}
    if len(described) == 1 and all(item.images is not None for item in group):
        return next(iter(described.values()))  # `describe` gives the whole group one mapping
    return known_facts(session, target.registry_id, digests)


def _select(
    session: Session, target: Target, group: list[Listed], saved: list[Saved], now: Any, compared: dict[str, Before]
) -> None:
    """The policies watching the group's repositories, evaluated on their new tags (and their rows until now,
    so that a change that cannot move a selection ranks nothing); each `selected` event follows its
    repository's tag events (`watcher.policies.evaluation`)."""
    by_repository = {one.repository: one for one in saved}
    listed = {item.name: item.tags for item in group if item.name in by_repository}
    before = {name: compared[name].rows for name in listed if name in compared}
    selected = reevaluate(session, target, listed, now, before=before)
    for event in selected:
        by_repository[event.repository].events.append(event)


def compare(
    repository: str, rows: Mapping[str, TagRow], listed: Mapping[str, TagState], wants: Callable[[str], bool]
) -> tuple[list[Change], list[int]]:
    """`watcher.diff.diff` of one repository's stored rows (those in scope) against its listing, and the ids
    of the rows no longer in scope; straight from the rows, without building the stored side as a Listing
    (a 1 %-changed poll compares nearly every row it stores)."""
    changes: list[Change] = []
    unwanted: list[int] = []
    for tag, (tag_id, digest, pushed_at) in rows.items():
        if not wants(tag):
            unwanted.append(tag_id)
            continue
        now = listed.get(tag)
        if now is None:
            changes.append(Change(ChangeKind.REMOVED, repository, tag, digest, "", pushed_at))
        elif now.digest != digest:
            changes.append(Change(ChangeKind.UPDATED, repository, tag, now.digest, digest, now.pushed_at))
    for tag, now in listed.items():
        if tag not in rows or (unwanted and not wants(tag)):
            changes.append(Change(ChangeKind.ADDED, repository, tag, now.digest, "", now.pushed_at))
    changes.sort(key=attrgetter("tag"))
    return changes, unwanted


def _id(item: Listed) -> int:
    assert item.stored is not None
    return item.stored.id


def _claim(session: Session, items: list[Listed]) -> None:
    """Compare-and-set each stored repository's revision (one executemany): Conflict if any moved on."""
    if not items:
        return
    statement = (
        update(REPOSITORIES)
        .where(REPOSITORIES.c.id == bindparam("_id"), REPOSITORIES.c.revision == bindparam("_revision"))
        .values(revision=REPOSITORIES.c.revision + 1, fingerprint=bindparam("_fingerprint"))
    )
    params = [
        {"_id": item.stored.id, "_revision": item.stored.revision, "_fingerprint": item.fingerprint}
        for item in items
        if item.stored is not None
    ]
    if session.execute(statement, params).rowcount != len(params):  # type: ignore[attr-defined]
        raise Conflict()


def _insert_repositories(session: Session, target: Target, items: list[Listed], now: Any) -> list[int]:
    """New repositories' rows, in one multi-row INSERT; a repository another poll created meanwhile makes
    it fail (the unique name), which is a conflict."""
    if not items:
        return []
    rows = [
        {"registry_id": target.registry_id, "name": i.name, "first_seen_at": now, "fingerprint": i.fingerprint}
        for i in items
    ]
    statement = insert(REPOSITORIES).returning(REPOSITORIES.c.id, sort_by_parameter_order=True)
    return [row.id for row in session.execute(statement, rows)]


def _events(target: Target, changes: list[Change], now: Any, facts: Mapping[str, ImageFacts]) -> list[Event]:
    return [
        new_event(
            target.registry_id,
            target.registry,
            target.url,
            change,
            now,
            workspace=target.workspace,
            workspace_id=target.workspace_id,
            image=facts.get(change.digest, NO_IMAGE),
        )
        for change in changes
    ]


@dataclass
class Writes:
    """The tag rows to insert, update and delete, and the repositories to delete, for one bulk write."""

    inserted: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)

    def add(self, repo_id: int, changes: Iterable[Change], rows: Mapping[str, TagRow]) -> None:
        for change in changes:
            if change.kind is ChangeKind.ADDED:
                self.inserted.append(
                    {
                        "repository_id": repo_id,
                        "name": change.tag,
                        "digest": change.digest,
                        "pushed_at": change.pushed_at,
                    }
                )
            elif change.kind is ChangeKind.UPDATED:
                self.updated.append({"id": rows[change.tag][0], "digest": change.digest, "pushed_at": change.pushed_at})
            else:
                self.deleted.append(rows[change.tag][0])

    def execute(self, session: Session) -> None:
        for start in range(0, len(self.deleted), IN_CHUNK):  # first: a tag may be re-added under its name
            session.execute(delete(TAGS).where(TAGS.c.id.in_(self.deleted[start : start + IN_CHUNK])))
        for start in range(0, len(self.gone), IN_CHUNK):
            session.execute(delete(REPOSITORIES).where(REPOSITORIES.c.id.in_(self.gone[start : start + IN_CHUNK])))
        update_rows(session, TAGS, self.updated)
        insert_rows(session, TAGS, self.inserted)
