"""Events carry their workspace: two workspaces each with a registry named `prod`, polled every way a poll
commits (a full poll, a split poll's helpers, a webhook's repository poll), emit events naming their own
workspace, and with WATCHER_STREAM_PER_WORKSPACE each workspace's go to its own stream — in order, once
each, each stream trimmed on its own."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, select

from tests.conftest import Watcher
from tests.support.cdevents import validate_cloudevent
from tests.support.fixtures import RegistryEnv
from watcher import schema
from watcher.db import session_scope
from watcher.diff import Change, ChangeKind
from watcher.errors import NotFoundError
from watcher.models import Event, utcnow
from watcher.outbox.events import NO_IMAGE, new_event
from watcher.outbox.relay import relay
from watcher.polling import fanout
from watcher.polling import poll as polling
from watcher.polling.repository import poll_repository
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec
from watcher.schema import DEFAULT_WORKSPACE_ID
from watcher.settings import get_settings


def add_workspace(watcher: Watcher, name: str) -> int:
    """A second workspace, straight into its table (the workspace commands are not what is tested here)."""
    with watcher.engine.begin() as connection:
        statement = insert(schema.workspaces).values(name=name).returning(schema.workspaces.c.id)
        return int(connection.execute(statement).scalar_one())


def workspace_id_of(watcher: Watcher, name: str) -> int:
    with watcher.engine.connect() as connection:
        found = connection.scalar(select(schema.workspaces.c.id).where(schema.workspaces.c.name == name))
    assert found is not None
    return int(found)


def record_in(watcher: Watcher, workspace: str, count: int, repository: str = "team/app") -> list[str]:
    """`count` events of `workspace`'s registry `prod` straight into the outbox, as a poll would commit them."""
    with session_scope(watcher.engine) as session:
        row, _ = registries.save(
            session, RegistrySpec("prod", "oci", "https://registry.example.com", workspace=workspace)
        )
        events = [
            new_event(
                row.id,
                "prod",
                row.url,
                Change(ChangeKind.ADDED, repository, f"t{i:04d}", f"sha256:{i:064x}"),
                utcnow(),
                workspace=workspace,
                workspace_id=row.workspace_id,
            )
            for i in range(count)
        ]
        session.add_all(events)
    return [e.event_id for e in events]


def entries(watcher: Watcher, stream: str) -> list[dict[str, str]]:
    found: Any = watcher.redis.xrange(stream)
    return [fields for _, fields in found]


@pytest.fixture
def per_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_STREAM_PER_WORKSPACE", "true")
    get_settings.cache_clear()


def register_prod(watcher: Watcher, registry: RegistryEnv, workspace: str, scope: str) -> None:
    with session_scope(watcher.engine) as session:
        spec = RegistrySpec(
            "prod", "oci", registry.url, options={"repositories": [scope]}, emit_existing=True, workspace=workspace
        )
        row, outcome = registries.save(session, spec)
        assert outcome == "created"
        assert row.workspace_id == workspace_id_of(watcher, workspace)


def check_own(watcher: Watcher, workspace: str, stream_entries: list[dict[str, str]], prefix: str) -> None:
    """Every entry names `workspace` and the plain name `prod`, in its fields, source and extension attribute,
    and is one of the workspace's repositories."""
    assert stream_entries
    for entry in stream_entries:
        assert (entry["workspace"], entry["registry"]) == (workspace, "prod")
        assert entry["repository"].startswith(prefix)
        document = json.loads(entry["cloudevent"])
        validate_cloudevent(document)
        assert document["source"] == f"/watcher/workspaces/{workspace}/registries/prod"
        assert document["workspace"] == workspace
        custom = document["data"]["customData"]  # the stream fields, and what is known of the image
        assert custom.keys() == (entry.keys() - {"cloudevent"}) | NO_IMAGE.custom_data().keys()
        assert {k: custom[k] for k in entry if k != "cloudevent"} == {
            k: v for k, v in entry.items() if k != "cloudevent"
        }
    with watcher.engine.connect() as connection:
        rows = connection.execute(
            select(Event.event_id, Event.workspace_id).where(
                Event.event_id.in_([entry["event_id"] for entry in stream_entries])
            )
        ).all()
    assert {row.workspace_id for row in rows} == {workspace_id_of(watcher, workspace)}
    assert len(rows) == len(stream_entries)


@pytest.mark.usefixtures("per_workspace")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_two_workspaces_registries_named_alike_emit_to_their_own_streams(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """`prod` of `default` and `prod` of `team-b`, on one real registry (different repositories): a full poll
    and a webhook's repository poll of each commit events naming its own workspace, onto its own stream."""
    add_workspace(watcher, "team-b")
    for part in ("a", "b"):
        registry.client.push_image(f"{unique_repo}/{part}/app", "v1")
    register_prod(watcher, registry, "default", f"{unique_repo}/a/*")
    register_prod(watcher, registry, "team-b", f"{unique_repo}/b/*")

    ours, theirs = polling.poll("prod"), polling.poll("team-b/prod")
    assert [(e.workspace, e.registry_name, e.repository) for e in ours.events] == [
        ("default", "prod", f"{unique_repo}/a/app")
    ]
    assert [(e.workspace, e.registry_name, e.repository) for e in theirs.events] == [
        ("team-b", "prod", f"{unique_repo}/b/app")
    ]
    registry.client.push_image(f"{unique_repo}/b/app", "v2")
    hinted = poll_repository("team-b/prod", f"{unique_repo}/b/app")
    assert [(e.workspace, e.workspace_id, e.tag) for e in hinted.events] == [
        ("team-b", workspace_id_of(watcher, "team-b"), "v2")
    ]

    assert relay(watcher.redis) == 3
    default_stream, team_stream = (
        entries(watcher, f"{watcher.stream}:default"),
        entries(watcher, f"{watcher.stream}:team-b"),
    )
    check_own(watcher, "default", default_stream, f"{unique_repo}/a/")
    check_own(watcher, "team-b", team_stream, f"{unique_repo}/b/")
    assert [e["tag"] for e in team_stream] == ["v1", "v2"]
    assert watcher.redis.exists(watcher.stream) == 0  # the one stream is not written


@pytest.mark.usefixtures("per_workspace")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_split_polls_helpers_commit_in_the_registrys_workspace(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big `prod` of team-b listed in chunks by helpers (`watcher.polling.fanout`): the helpers' events are
    team-b's too, never those of `default`'s `prod`."""
    monkeypatch.setenv("WATCHER_FANOUT_REPOSITORIES", "4")
    get_settings.cache_clear()
    add_workspace(watcher, "team-b")
    for i in range(10):
        registry.client.push_image(f"{unique_repo}/b/r{i:02d}", "v1")
    registry.client.push_image(f"{unique_repo}/a/app", "v1")
    register_prod(watcher, registry, "default", f"{unique_repo}/a/*")
    register_prod(watcher, registry, "team-b", f"{unique_repo}/b/*")
    helpers: list[threading.Thread] = []
    helped: list[fanout.Helped] = []

    def dispatch(run_id: int, count: int) -> None:
        for _ in range(count):
            helpers.append(threading.Thread(target=lambda: helped.append(fanout.help_poll("team-b/prod", run_id))))
            helpers[-1].start()

    result = polling.poll("team-b/prod", dispatch=dispatch)
    for helper in helpers:
        helper.join(30)
    assert (result.chunks, result.event_count) == (3, 10)
    assert sum(h.events for h in helped) == 10 - len(result.events)
    polling.poll("prod")
    assert relay(watcher.redis) == 11
    check_own(watcher, "team-b", entries(watcher, f"{watcher.stream}:team-b"), f"{unique_repo}/b/")
    check_own(watcher, "default", entries(watcher, f"{watcher.stream}:default"), f"{unique_repo}/a/")
    assert len(entries(watcher, f"{watcher.stream}:team-b")) == 10


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_without_per_workspace_streams_every_workspace_shares_the_one_stream(watcher: Watcher) -> None:
    add_workspace(watcher, "team-b")
    ids = [*record_in(watcher, "default", 2), *record_in(watcher, "team-b", 2)]
    assert relay(watcher.redis) == 4
    shared = entries(watcher, watcher.stream)
    assert [(e["event_id"], e["workspace"]) for e in shared] == list(
        zip(ids, ["default", "default", "team-b", "team-b"], strict=True)
    )
    assert watcher.redis.exists(f"{watcher.stream}:team-b", f"{watcher.stream}:default") == 0


@pytest.mark.usefixtures("per_workspace")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_each_stream_gets_its_workspaces_events_once_in_order_through_a_crash(watcher: Watcher) -> None:
    """Interleaved events of two workspaces, more than a batch: a relay that dies after appending re-sends
    nothing, and each stream holds exactly its workspace's events in detection order."""
    add_workspace(watcher, "team-b")
    expected: dict[str, list[str]] = {"default": [], "team-b": []}
    for round_ in range(4):
        for workspace in ("team-b", "default"):
            expected[workspace] += record_in(watcher, workspace, 160, repository=f"team/app{round_}")

    def crash_before_marking(connection: Connection) -> None:
        raise RuntimeError("worker killed between XADD and marking the rows published")

    event.listen(Engine, "commit", crash_before_marking)
    try:
        with pytest.raises(RuntimeError):
            relay(watcher.redis)
    finally:
        event.remove(Engine, "commit", crash_before_marking)
    assert relay(watcher.redis) == 1280 - 500  # the first batch was appended before the crash
    assert relay(watcher.redis) == 0
    for workspace, ids in expected.items():
        assert [e["event_id"] for e in entries(watcher, f"{watcher.stream}:{workspace}")] == ids
    with watcher.engine.connect() as connection:
        assert connection.scalar(select(Event.id).where(Event.published_at.is_(None))) is None


@pytest.mark.usefixtures("per_workspace")
def test_concurrent_relays_never_duplicate_on_any_stream(watcher: Watcher) -> None:
    import redis

    from tests.conftest import REDIS_URL

    add_workspace(watcher, "team-b")
    expected = {"team-b": record_in(watcher, "team-b", 300), "default": record_in(watcher, "default", 300)}
    clients = [redis.Redis.from_url(REDIS_URL, decode_responses=True) for _ in range(4)]
    threads = [threading.Thread(target=relay, args=(client,)) for client in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for workspace, ids in expected.items():
        assert [e["event_id"] for e in entries(watcher, f"{watcher.stream}:{workspace}")] == ids


@pytest.mark.usefixtures("per_workspace")
def test_each_stream_is_trimmed_on_its_own(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy workspace's stream is capped; a quiet one's keeps all it has, whatever the busy one appends."""
    monkeypatch.setenv("WATCHER_EVENTS_MAXLEN", "50")
    get_settings.cache_clear()
    add_workspace(watcher, "team-b")
    quiet = record_in(watcher, "default", 40)
    record_in(watcher, "team-b", 1000)
    assert relay(watcher.redis) == 1040
    assert 50 <= watcher.redis.xlen(f"{watcher.stream}:team-b") < 1000
    assert [e["event_id"] for e in entries(watcher, f"{watcher.stream}:default")] == quiet


@pytest.mark.usefixtures("per_workspace")
def test_events_tail_follows_its_workspaces_stream(watcher: Watcher) -> None:
    add_workspace(watcher, "team-b")
    for workspace in ("team-b", "default"):
        watcher.redis.xgroup_create(f"{watcher.stream}:{workspace}", "cd", id="0", mkstream=True)
    theirs = record_in(watcher, "default", 2)
    ours = record_in(watcher, "team-b", 3)
    relay(watcher.redis)
    tail = watcher.cli("events", "tail", "--workspace", "team-b", "--group", "cd", "--count", "3", "--json")
    assert tail.exit_code == 0, tail.output
    got = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(e["event_id"], e["workspace"]) for e in got] == [(i, "team-b") for i in ours]
    tail = watcher.cli("--workspace", "default", "events", "tail", "--group", "cd", "--count", "2", "--json")
    assert [json.loads(line)["event_id"] for line in tail.stdout.splitlines()] == theirs


def test_events_tail_refuses_a_workspace_name_in_one_line(watcher: Watcher) -> None:
    tail = watcher.cli("events", "tail", "--workspace", "Team B", "--count", "1")
    assert tail.exit_code == 2
    assert "is not a workspace name" in tail.stderr and "Traceback" not in tail.output


def test_a_registry_is_saved_in_its_specs_workspace(watcher: Watcher) -> None:
    """`prod` in two workspaces is two registries; saving one never touches the other."""
    team_b = add_workspace(watcher, "team-b")
    with session_scope(watcher.engine) as session:
        ours, created = registries.save(session, RegistrySpec("prod", "oci", "https://a.example.com"))
        theirs, also_created = registries.save(
            session, RegistrySpec("prod", "oci", "https://b.example.com", workspace="team-b")
        )
        assert (created, also_created) == ("created", "created")
        assert (ours.workspace_id, theirs.workspace_id) == (DEFAULT_WORKSPACE_ID, team_b)
        assert ours.id != theirs.id
    with session_scope(watcher.engine) as session:
        assert registries.find(session, "prod").url == "https://a.example.com"
        assert registries.find(session, "team-b/prod").url == "https://b.example.com"
        with pytest.raises(NotFoundError, match="no workspace named 'nowhere'"):
            registries.save(session, RegistrySpec("prod", "oci", "https://c.example.com", workspace="nowhere"))


def test_every_key_a_workspace_stream_could_collide_with_is_reserved() -> None:
    """`{WATCHER_EVENTS_STREAM}:{workspace}` must never be a key watcher keeps for itself: every such key
    the code writes with one segment after the prefix (a workspace name has no `:`) is a reserved name. A new
    key of that shape fails this test until it is reserved (and refused as a workspace name)."""
    from watcher.registrations.keys import RESERVED_WORKSPACE_NAMES
    from watcher.registrations.spec import NAME

    package = Path(__file__).parents[2] / "watcher"
    shape = re.compile(r"\{[^{}]*(?:events_stream|stream)\}:([^\"'{}]+)[\"']")
    found = {
        suffix for path in package.rglob("*.py") for suffix in shape.findall(path.read_text()) if NAME.fullmatch(suffix)
    }
    assert {"appended", "relay-lock", "workers"} <= found  # the check sees the keys it is about
    assert found <= RESERVED_WORKSPACE_NAMES
