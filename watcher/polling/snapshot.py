"""Reading a registry's stored snapshot one repository at a time.

A poll first reads only the repositories rows (name, fingerprint, revision): a repository whose listing has
the fingerprint stored for it is unchanged, and its tag rows are never read. Only a repository whose
fingerprint differs has its tag rows loaded, and only while it is being committed (`watcher.polling.saving`).
SQLAlchemy Core on `watcher.schema`'s tables: a poll of named repositories reads its stored ones before its
first request, and imports no ORM for it (`watcher.polling.poll`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from watcher.diff import Listing, TagState
from watcher.registrations.scope import Scope
from watcher.schema import repositories as REPOSITORIES
from watcher.schema import tags as TAGS

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    Writer = Connection | Session

#: ids per `IN (...)`: well under every database's limit on bound parameters
IN_CHUNK = 500
REPO = REPOSITORIES.c


def fingerprint(tags: Mapping[str, TagState]) -> str:
    """A hash over the sorted tag -> digest pairs: equal exactly when the diff would find nothing.

    (A changed push time alone is no change, as in `watcher.diff`, so it is not part of it.)"""
    digest = hashlib.sha256()
    for tag in sorted(tags):
        digest.update(f"{tag}\0{tags[tag].digest}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Stored:
    """One stored repository as a poll found it before listing it."""

    id: int
    fingerprint: str | None
    revision: int


def stored_repositories(session: Writer, registry_id: int) -> dict[str, Stored]:
    """Every stored repository of the registry: one query, no tag rows."""
    rows = session.execute(
        select(REPO.name, REPO.id, REPO.fingerprint, REPO.revision).where(REPO.registry_id == registry_id)
    )
    return {name: Stored(repo_id, fp, revision) for name, repo_id, fp, revision in rows}


def out_of_scope(names: Iterable[str], scope: Scope) -> list[str]:
    """The stored repositories among `names` that the registry no longer watches."""
    if not scope.repositories:
        return []
    return [name for name in names if not scope.wants_repository(name)]


def drop_repositories(session: Writer, registry_id: int, names: list[str]) -> None:
    """Repositories the registry no longer watches leave the snapshot silently (their tags cascade)."""
    for start in range(0, len(names), IN_CHUNK):
        session.execute(
            delete(REPOSITORIES).where(REPO.registry_id == registry_id, REPO.name.in_(names[start : start + IN_CHUNK]))
        )


#: one stored tag row: (row id, digest, push time)
TagRow = tuple[int, str, datetime | None]


def stored_rows(session: Session, repository_ids: Iterable[int]) -> dict[int, dict[str, TagRow]]:
    """The tag rows of these repositories only: repository id -> tag -> (row id, digest, push time).

    A Core query on the table, rows as plain tuples: a 1 %-changed poll of a big registry reads most of its
    rows here, and ORM entities or a TagState per row cost more than the reading."""
    ids = list(repository_ids)
    found: dict[int, dict[str, TagRow]] = {repo_id: {} for repo_id in ids}
    columns = (TAGS.c.repository_id, TAGS.c.name, TAGS.c.id, TAGS.c.digest, TAGS.c.pushed_at)
    for start in range(0, len(ids), IN_CHUNK):
        rows = session.connection().execute(
            select(*columns).where(TAGS.c.repository_id.in_(ids[start : start + IN_CHUNK]))
        )
        for repo_id, name, *row in rows:
            found[repo_id][name] = tuple(row)
    return found


def stored_tags(session: Session, repository_ids: Iterable[int]) -> dict[int, dict[str, tuple[int, TagState]]]:
    """The tag rows of these repositories only: repository id -> tag -> (row id, state)."""
    return {
        repo_id: {name: (tag_id, TagState(digest, pushed_at)) for name, (tag_id, digest, pushed_at) in rows.items()}
        for repo_id, rows in stored_rows(session, repository_ids).items()
    }


def load_snapshot(session: Session, registry_id: int) -> tuple[Listing, dict[str, int]]:
    """The whole stored snapshot and each repository's row id (for tools and tests; polls never load it)."""
    repos = stored_repositories(session, registry_id)
    tags = stored_tags(session, (stored.id for stored in repos.values()))
    listing = {name: {tag: state for tag, (_, state) in tags[stored.id].items()} for name, stored in repos.items()}
    return listing, {name: stored.id for name, stored in repos.items()}
