"""What re-evaluating a `newest-build` policy reads: an image's creation time is content-addressed, so a
digest's is read from the database once per process; a digest whose metadata is not stored yet is asked
for again at the next change (its metadata may have been fetched meanwhile), and then selected by it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from tests.conftest import Watcher
from watcher import schema
from watcher.db import session_scope
from watcher.diff import TagState
from watcher.policies import evaluation
from watcher.policies.store import PolicySpec, save
from watcher.polling.saving import Listed, Target
from watcher.polling.saving import save as commit
from watcher.polling.snapshot import fingerprint, stored_repositories
from watcher.registrations import store
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def asked(watcher: Watcher) -> Iterator[list[set[str]]]:
    """The digests each query of the creation times in `images` asked for, in order (not the events' own
    lookup of their digests' metadata, which every commit with events makes)."""
    queries: list[set[str]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if " ".join(statement.split()).startswith("SELECT images.digest, images.created FROM images"):
            values = list(parameters.values() if isinstance(parameters, dict) else parameters)
            values += [v for value in values if isinstance(value, list) for v in value]  # PostgreSQL's one array
            queries.append({v for v in values if isinstance(v, str) and v.startswith("sha256:")})

    event.listen(watcher.engine, "before_cursor_execute", seen)
    yield queries
    event.remove(watcher.engine, "before_cursor_execute", seen)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_digests_creation_time_is_read_once_and_a_missing_one_again(watcher: Watcher, asked: list[set[str]]) -> None:
    evaluation._created_times.clear()
    with session_scope(watcher.engine) as session:
        row, _ = store.save(session, RegistrySpec("r1", "oci", "https://registry.example"), admitted=True)
        target = Target.of(row, row.url, Scope.from_options({}), emit_new=True)
        images = [{"digest": digest(n), "kind": "image", "created": T0 + timedelta(days=n)} for n in (1, 2)]
        session.execute(insert(schema.images), images)
    tags = {"a": TagState(digest(1)), "b": TagState(digest(2))}

    def change(tag: str, state: TagState) -> list[tuple[str, str]]:
        with session_scope(watcher.engine) as session:
            stored = stored_repositories(session, target.registry_id).get("app")
        tags[tag] = state
        saved = commit(watcher.engine, target, [Listed("app", dict(tags), fingerprint(tags), stored)])
        return [(e.change, e.tag) for e in saved[0].events]

    assert change("c", TagState(digest(3), T0)) == [("added", "a"), ("added", "b"), ("added", "c")]  # no policy yet
    assert asked == []
    with session_scope(watcher.engine) as session:
        spec = PolicySpec.build("newest", "r1", "app", newest_build=True)
        assert [e.tag for e in save(session, spec, workspace_id=target.workspace_id).events] == ["b"]
    assert asked == [{digest(1), digest(2), digest(3)}]
    assert change("d", TagState(digest(4), T0)) == [("added", "d")]  # pushed long before b was built
    assert asked[1:] == [{digest(3), digest(4)}]  # only those without metadata: 1 and 2 are known
    with session_scope(watcher.engine) as session:
        session.execute(insert(schema.images).values(digest=digest(4), kind="image", created=T0 + timedelta(days=9)))
    assert change("e", TagState(digest(5), T0)) == [("added", "e"), ("selected", "d")]  # 4's metadata, found
    assert asked[2:] == [{digest(3), digest(4), digest(5)}]
    assert change("f", TagState(digest(6), T0)) == [("added", "f")]
    assert asked[3:] == [{digest(3), digest(5), digest(6)}]  # 4's is known now
