"""The read model and the commands built on it: `watcher status` and `watcher images`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, event, insert

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.images import ensure_images
from watcher import schema
from watcher.db import session_scope
from watcher.diff import Change, ChangeKind
from watcher.errors import InputError
from watcher.models import PollRun, Repository, Tag, utcnow
from watcher.outbox.events import new_event, rfc3339
from watcher.policies.strategies import Policy, select
from watcher.read.model import (
    EventFilters,
    Image,
    encode_cursor,
    events_page,
    images_page,
    polls_page,
    registry_details,
    registry_statuses,
    repositories_page,
)
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE_ID

DIGEST = "sha256:" + "a" * 64


def registry(watcher: Watcher, name: str) -> int:
    with session_scope(watcher.engine) as session:
        row, _ = registries.save(session, RegistrySpec(name, "oci", f"https://{name}.example.com"))
        return row.id


def run(watcher: Watcher, registry_id: int, outcome: str, *, minutes_ago: int, error: str = "") -> None:
    finished = utcnow() - timedelta(minutes=minutes_ago)
    with session_scope(watcher.engine) as session:
        session.add(
            PollRun(registry_id=registry_id, started_at=finished, finished_at=finished, outcome=outcome, error=error)
        )


def store(watcher: Watcher, registry_id: int, repository: str, tags: list[str]) -> None:
    with session_scope(watcher.engine) as session:
        repo = Repository(registry_id=registry_id, name=repository)
        session.add(repo)
        session.flush()
        session.add_all(Tag(repository_id=repo.id, name=t, digest=DIGEST) for t in tags)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_status_tells_pending_ok_and_failing_apart(watcher: Watcher) -> None:
    fresh, healthy, broken = registry(watcher, "fresh"), registry(watcher, "healthy"), registry(watcher, "broken")
    run(watcher, healthy, "failed", minutes_ago=10, error="unreachable")
    run(watcher, healthy, "ok", minutes_ago=5)
    run(watcher, broken, "ok", minutes_ago=30)
    run(watcher, broken, "failed", minutes_ago=2, error="registry 'broken': credentials refused: HTTP 401\ndetail")
    with session_scope(watcher.engine) as session:
        session.add(PollRun(registry_id=fresh, outcome="running"))  # a first poll under way is still pending
    store(watcher, healthy, "team/app", ["v1", "v2"])
    store(watcher, healthy, "team/api", ["1.0"])

    result = watcher.cli("status", "--json")
    assert result.exit_code == 0, result.output
    shown = {s["name"]: s for s in json.loads(result.stdout)}
    assert [s["name"] for s in json.loads(result.stdout)] == ["broken", "fresh", "healthy"]
    assert shown["fresh"]["state"] == "pending" and shown["fresh"]["last_poll_at"] is None
    assert shown["healthy"]["state"] == "ok" and shown["healthy"]["last_error"] is None
    assert (shown["healthy"]["repositories"], shown["healthy"]["tags"]) == (2, 3)
    assert shown["broken"]["state"] == "failing"
    assert shown["broken"]["last_error"] == "registry 'broken': credentials refused: HTTP 401"
    assert shown["broken"]["last_success_at"] < shown["broken"]["last_poll_at"]
    assert set(shown["broken"]) == {
        "name",
        "provider",
        "state",
        "last_poll_at",
        "last_success_at",
        "last_error",
        "next_poll_at",
        "repositories",
        "tags",
        "last_webhook_at",
    }
    assert shown["broken"]["last_webhook_at"] is None

    table = watcher.cli("status").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "PROVIDER", "STATE"]
    broken_line = next(line for line in table if line.startswith("broken"))
    assert "failing" in broken_line and "2 min ago" in broken_line and "credentials refused" in broken_line


@pytest.mark.parametrize("question", [registry_statuses, registry_details])
def test_status_and_details_cost_the_same_statements_for_one_registry_or_fifty(watcher: Watcher, question) -> None:
    def statements(engine: Engine) -> int:
        seen: list[str] = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
        event.listen(engine, "before_cursor_execute", listener)
        try:
            with session_scope(engine) as session:
                question(session, workspace_id=DEFAULT_WORKSPACE_ID)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(seen)

    first = registry(watcher, "r0")
    run(watcher, first, "ok", minutes_ago=1)
    one = statements(watcher.engine)
    for number in range(1, 50):
        run(watcher, registry(watcher, f"r{number}"), "failed", minutes_ago=1, error="x")
    assert statements(watcher.engine) == one <= 8


def test_status_with_no_registries_says_what_to_do(watcher: Watcher) -> None:
    assert "watcher registry add" in watcher.cli("status").stdout
    assert json.loads(watcher.cli("status", "--json").stdout) == []


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_images_lists_what_a_poll_stored_with_pullable_references(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    app = f"{unique_repo}/app"
    v1 = registry.client.push_image(app, "v1")
    v2 = registry.client.push_image(app, "v2-rc")
    arm = registry.client.push_image(app, "arm", platform="linux/arm64")
    multi = registry.client.push_index(app, "multi", [v1, arm])
    api = registry.client.push_image(f"{unique_repo}/api", "1.0")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    spec = RegistrySpec("r1", "oci", registry.url)  # what the images are, read from the registry itself
    assert sorted(ensure_images(watcher.engine, spec, {v1: app, multi: app}).stored) == sorted([v1, multi])

    result = watcher.cli("images", "r1", "--json")
    assert result.exit_code == 0, result.output
    images = [json.loads(line) for line in result.stdout.splitlines()]
    host = registry.host
    assert [(i["repository"], i["tag"], i["digest"]) for i in images] == [
        (f"{unique_repo}/api", "1.0", api),
        (app, "arm", arm),
        (app, "multi", multi),
        (app, "v1", v1),
        (app, "v2-rc", v2),
    ]
    shown = {i["tag"]: i for i in images}
    assert shown["v1"]["image"] == f"{host}/{app}:v1"
    assert shown["v1"]["reference"] == f"{host}/{app}@{v1}"
    assert set(images[0]) == {
        *("registry", "repository", "tag", "digest", "pushed_at", "image", "reference"),
        *("created", "platforms", "size", "annotations"),
    }
    one, index, unread = shown["v1"], shown["multi"], shown["v2-rc"]
    assert (one["created"], one["platforms"], one["annotations"]) == ("1970-01-01T00:00:00.000Z", ["linux/amd64"], {})
    assert one["size"] > 0 and index["size"] > 0
    assert (index["created"], index["platforms"]) == (None, ["linux/amd64", "linux/arm64"])
    assert (unread["created"], unread["platforms"], unread["size"], unread["annotations"]) == (None, None, None, None)

    only_app = watcher.cli("images", "r1", app, "--tag", r"^v\d+$", "--json")
    assert [json.loads(line)["tag"] for line in only_app.stdout.splitlines()] == ["v1"]
    table = watcher.cli("images", "r1", app).stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "DIGEST", "PUSHED", "AT", "CREATED", "PLATFORMS"]
    cells = {line.split()[1]: line.split()[3:] for line in table[1:]}
    assert cells["multi"] == ["—", "—", "linux/amd64,linux/arm64"]  # the registry says no push time
    assert cells["v1"] == ["—", "1970-01-01T00:00:00.000Z", "linux/amd64"]
    assert cells["v2-rc"] == ["—", "—", "—"] and len(table) == 5
    newest = watcher.cli("images", "r1", app, "--sort", "created", "--json").stdout.splitlines()
    assert [json.loads(line)["tag"] for line in newest] == ["v2-rc", "v1", "multi", "arm"]  # all as old: by name


def test_images_of_an_unknown_registry_or_a_bad_pattern_is_one_line(watcher: Watcher) -> None:
    missing = watcher.cli("images", "nope")
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1 and "no registry named 'nope'" in missing.stderr
    registry(watcher, "r1")
    bad = watcher.cli("images", "r1", "--tag", "v(1")
    assert bad.exit_code == 1 and "--tag 'v(1'" in bad.stderr and "Traceback" not in bad.output


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("order", ["name", "pushed_at", "created"])
def test_image_pages_neither_repeat_nor_skip_while_tags_are_added(watcher: Watcher, order: str) -> None:
    registry_id = registry(watcher, "r1")
    store(watcher, registry_id, "team/app", [f"t{n:03}" for n in range(0, 250, 2)])
    with session_scope(watcher.engine) as session:
        repo_id = session.query(Repository.id).scalar()
        session.execute(Tag.__table__.update().values(pushed_at=utcnow() - timedelta(minutes=1)))
    seen: list[str] = []
    cursor = None
    added = 0
    while True:
        with session_scope(watcher.engine) as session:
            page = images_page(
                session,
                "r1",
                "team/app",
                order=order,  # type: ignore[arg-type]
                cursor=cursor,
                limit=10,
                workspace_id=DEFAULT_WORKSPACE_ID,
            )
        seen.extend(i.tag for i in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        with session_scope(watcher.engine) as session:  # a poll adds tags between two pages
            session.execute(
                insert(Tag),
                [{"repository_id": repo_id, "name": f"t{added * 2 + 1:03}", "digest": DIGEST, "pushed_at": utcnow()}],
            )
        added += 1
    originals = {f"t{n:03}" for n in range(0, 250, 2)}
    assert len(seen) == len(set(seen)), "a page repeated a row"
    assert originals <= set(seen), "a page skipped a row that existed when paging began"
    if order != "name":  # same push time: newest id (created: the greatest name) first; new ones sort before
        assert seen == sorted(originals, reverse=True)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_newest_build_orders_by_creation_then_push_time_and_pages_like_the_policy_selects(watcher: Watcher) -> None:
    """`order="created"`: the creation time (the push time where the image says none or is not read yet),
    then the push time, then the greatest name; every page joins each tag to what its digest is."""
    registry_id = registry(watcher, "r1")
    start = utcnow().replace(microsecond=0) - timedelta(days=1)

    def at(hours: int | None) -> datetime | None:
        return None if hours is None else start + timedelta(hours=hours)

    # tag: (created hours, pushed hours, image row?) — digests per tag, but "h" is "c"'s image
    shape = {
        "a": (3, 0, True),
        "b": (3, 1, True),
        "c": (3, 1, True),
        "d": (None, 2, False),  # not read yet: its push time stands in
        "e": (None, 4, True),  # the image says no creation time
        "f": (None, None, False),  # neither time: last
        "g": (1, None, True),
        "h": (3, None, True),
    }
    digest = {tag: "sha256:" + (tag if tag != "h" else "c") * 64 for tag in shape}
    with session_scope(watcher.engine) as session:
        app, other = Repository(registry_id=registry_id, name="team/app"), Repository(registry_id=registry_id, name="x")
        session.add_all([app, other])
        session.flush()
        session.add_all(
            Tag(repository_id=app.id, name=t, digest=digest[t], pushed_at=at(p)) for t, (_, p, _) in shape.items()
        )
        session.add(Tag(repository_id=other.id, name="z", digest=digest["b"], pushed_at=at(1)))
        session.execute(
            insert(schema.images),
            [
                {
                    "digest": digest[t],
                    "kind": "index" if t == "b" else "image",
                    "platforms": [{"os": "linux", "architecture": "amd64", "variant": None}]
                    + ([{"os": "linux", "architecture": "arm", "variant": "v7"}] if t == "b" else []),
                    "created": at(c),
                    "size": 1234,
                    "annotations": {"org.opencontainers.image.revision": f"rev-{t}"},
                }
                for t, (c, _, row) in shape.items()
                if row and t != "h"
            ],
        )

    def pages(repository: str | None) -> list[Image]:
        found: list[Image] = []
        cursor = None
        while True:
            with session_scope(watcher.engine) as session:
                page = images_page(
                    session,
                    "r1",
                    repository,
                    order="created",
                    cursor=cursor,
                    limit=3,
                    workspace_id=DEFAULT_WORKSPACE_ID,
                )
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    shown = pages("team/app")
    assert [i.tag for i in shown] == ["e", "c", "b", "a", "h", "d", "g", "f"]
    chosen = select(Policy.from_options(newest_build=True), shown)
    assert chosen is not None and chosen.tag == shown[0].tag  # the policy's choice leads the page
    by_tag = {i.tag: i for i in shown}
    b = by_tag["b"]
    assert (b.kind, b.created, b.size, b.platforms) == ("index", at(3), 1234, ("linux/amd64", "linux/arm/v7"))
    assert b.annotations == {"org.opencontainers.image.revision": "rev-b"}
    assert by_tag["h"].annotations == {"org.opencontainers.image.revision": "rev-c"}  # the same image as c
    assert by_tag["e"].created is None and by_tag["e"].platforms == ("linux/amd64",)
    d = by_tag["d"].as_json()
    assert (d["created"], d["platforms"], d["size"], d["annotations"]) == (None, None, None, None)
    assert by_tag["b"].as_json()["created"] == rfc3339(at(3))
    everywhere = [(i.repository, i.tag) for i in pages(None)]
    assert everywhere[:4] == [("team/app", "e"), ("x", "z"), ("team/app", "c"), ("team/app", "b")]  # z ties c, b
    assert len(everywhere) == len(set(everywhere)) == 9


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_event_pages_are_keyset_in_both_orders_with_filters(watcher: Watcher) -> None:
    registry_id = registry(watcher, "r1")
    with session_scope(watcher.engine) as session:
        for n in range(25):
            kind = ChangeKind.ADDED if n % 5 else ChangeKind.REMOVED
            change = Change(kind, "team/app" if n % 2 else "team/api", f"t{n}", DIGEST)
            session.add(new_event(registry_id, "r1", "https://r1.example.com", change, utcnow()))

    def walk(filters: EventFilters, order: str) -> list[int]:
        ids: list[int] = []
        cursor = None
        while True:
            with session_scope(watcher.engine) as session:
                page = events_page(
                    session,
                    filters,
                    order=order,  # type: ignore[arg-type]
                    cursor=cursor,
                    limit=4,
                    workspace_id=DEFAULT_WORKSPACE_ID,
                )
            ids.extend(e.id for e in page.items)
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    every = walk(EventFilters(), "asc")
    assert len(every) == 25 and every == sorted(every)
    assert walk(EventFilters(), "desc") == every[::-1]
    removed = walk(EventFilters(registry="r1", change="removed"), "desc")
    assert len(removed) == 5
    assert len(walk(EventFilters(repository="team/app", tag="t3"), "asc")) == 1


def test_a_forged_cursor_or_limit_is_one_clear_error(watcher: Watcher) -> None:
    registry(watcher, "r1")
    with session_scope(watcher.engine) as session:
        for bad in ("not-a-cursor", encode_cursor([]), encode_cursor(["x"]), encode_cursor([True]), "eyJhIjogMX0"):
            with pytest.raises(InputError, match=r"cursor .* is not valid"):
                events_page(session, cursor=bad, workspace_id=DEFAULT_WORKSPACE_ID)
        for bad in (encode_cursor(["yesterday", 1]), encode_cursor([1, 2])):
            with pytest.raises(InputError, match=r"cursor .* is not valid"):
                images_page(session, "r1", order="pushed_at", cursor=bad, workspace_id=DEFAULT_WORKSPACE_ID)
        moment = utcnow().isoformat()
        for bad in (encode_cursor([moment, 1]), encode_cursor([moment, moment, "t\x00", 1])):
            with pytest.raises(InputError, match=r"cursor .* is not valid"):
                images_page(session, "r1", order="created", cursor=bad, workspace_id=DEFAULT_WORKSPACE_ID)
        with pytest.raises(InputError, match="limit 1001 is out of range"):
            images_page(session, "r1", limit=1001, workspace_id=DEFAULT_WORKSPACE_ID)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_repository_and_poll_pages(watcher: Watcher) -> None:
    registry_id = registry(watcher, "r1")
    for number in range(7):
        store(watcher, registry_id, f"team/app{number}", [f"v{n}" for n in range(number + 1)])
    with session_scope(watcher.engine) as session:
        session.execute(Tag.__table__.update().values(pushed_at=utcnow()))
    for minutes in (30, 20, 10):
        run(watcher, registry_id, "ok", minutes_ago=minutes)
    names: list[tuple[str, int]] = []
    cursor = None
    while True:
        with session_scope(watcher.engine) as session:
            page = repositories_page(session, "r1", cursor=cursor, limit=3, workspace_id=DEFAULT_WORKSPACE_ID)
        names.extend((r.name, r.tags) for r in page.items)
        assert all(r.last_pushed_at is not None and r.last_pushed_at.tzinfo for r in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert names == [(f"team/app{n}", n + 1) for n in range(7)]
    with session_scope(watcher.engine) as session:
        assert [
            r.name for r in repositories_page(session, "r1", q="APP3", workspace_id=DEFAULT_WORKSPACE_ID).items
        ] == ["team/app3"]
        first = polls_page(session, "r1", limit=2, workspace_id=DEFAULT_WORKSPACE_ID)
        rest = polls_page(session, "r1", cursor=first.next_cursor, limit=2, workspace_id=DEFAULT_WORKSPACE_ID)
        finished = [p.finished_at for p in first.items + rest.items]
    assert finished == sorted(finished, reverse=True) and len(finished) == 3 and rest.next_cursor is None
