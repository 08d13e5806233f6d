"""The outbox relay: every event reaches the stream exactly once, in order, even through crashes and outages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, Engine, event, func, select

from tests.conftest import REDIS_URL, Watcher
from tests.support.redis_server import RedisServer
from watcher.db import session_scope
from watcher.diff import Change, ChangeKind
from watcher.errors import StateError
from watcher.models import Event, utcnow
from watcher.outbox.events import new_event
from watcher.outbox.relay import relay
from watcher.polling import poll as polling
from watcher.polling import saving
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec
from watcher.settings import get_settings


def record(watcher: Watcher, count: int, repository: str = "team/app") -> list[str]:
    """`count` events of one repository straight into the outbox, as a poll would commit them."""
    with session_scope(watcher.engine) as session:
        row, _ = registries.save(session, RegistrySpec("r1", "oci", "https://registry.example.com"))
        events = [
            new_event(
                row.id,
                "r1",
                row.url,
                Change(ChangeKind.ADDED, repository, f"t{i:04d}", f"sha256:{i:064x}"),
                utcnow(),
            )
            for i in range(count)
        ]
        session.add_all(events)
    return [e.event_id for e in events]


def unpublished(watcher: Watcher) -> int:
    with watcher.engine.connect() as conn:
        return conn.scalar(select(func.count(Event.id)).where(Event.published_at.is_(None))) or 0


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_events_go_out_once_in_detection_order(watcher: Watcher) -> None:
    ids = record(watcher, 1200)  # more than one batch
    assert relay(watcher.redis) == 1200
    assert [e["event_id"] for e in watcher.stream_entries()] == ids
    assert unpublished(watcher) == 0
    assert relay(watcher.redis) == 0
    assert len(watcher.stream_entries()) == 1200


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_relay_that_dies_after_appending_resends_nothing(watcher: Watcher) -> None:
    ids = record(watcher, 30)

    def crash_before_marking(connection: Connection) -> None:
        raise RuntimeError("worker killed between XADD and marking the rows published")

    event.listen(Engine, "commit", crash_before_marking)  # the relay's batch commits on a Core connection
    try:
        with pytest.raises(RuntimeError):
            relay(watcher.redis)
    finally:
        event.remove(Engine, "commit", crash_before_marking)
    assert len(watcher.stream_entries()) == 30  # appended...
    assert unpublished(watcher) == 30  # ...but not marked
    assert relay(watcher.redis) == 0  # the retry appends nothing again
    assert unpublished(watcher) == 0
    assert [e["event_id"] for e in watcher.stream_entries()] == ids


def test_concurrent_relays_never_duplicate(watcher: Watcher) -> None:
    ids = record(watcher, 600)
    clients = [redis.Redis.from_url(REDIS_URL, decode_responses=True) for _ in range(4)]
    threads = [threading.Thread(target=relay, args=(client,)) for client in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["event_id"] for e in watcher.stream_entries()] == ids


def test_the_stream_is_trimmed_but_the_history_is_kept(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_EVENTS_MAXLEN", "50")
    get_settings.cache_clear()
    record(watcher, 1000)
    relay(watcher.redis)
    assert watcher.redis.xlen(watcher.stream) < 1000
    with watcher.engine.connect() as conn:
        assert conn.scalar(select(func.count(Event.id))) == 1000
    assert len(watcher.cli("events", "--limit", "1000").stdout.splitlines()) == 1000


@pytest.fixture
def own_redis(watcher: Watcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    monkeypatch.setenv("WATCHER_REDIS_URL", server.url)
    get_settings.cache_clear()
    yield server
    server.stop()


def test_events_wait_in_the_outbox_while_redis_is_down(
    watcher: Watcher, own_redis: RedisServer, registry, unique_repo: str
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    for tag in ("v2", "v3"):
        registry.client.push_image(f"{unique_repo}/app", tag)
    own_redis.stop()
    result = watcher.cli("poll", "r1")
    assert result.exit_code == 1
    assert "listed and saved, but the events are not on the stream yet" in result.stderr
    assert unpublished(watcher) == 2
    with pytest.raises(StateError):
        relay(redis.Redis.from_url(own_redis.url, decode_responses=True))
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert relay(client) == 2
    entries: Any = client.xrange(watcher.stream)
    assert [f["tag"] for _, f in entries] == ["v2", "v3"]
    assert unpublished(watcher) == 0


def test_a_crash_before_the_commit_loses_nothing(
    watcher: Watcher, registry, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    registry.client.push_image(f"{unique_repo}/app", "v2")

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("worker killed after listing, before the commit")

    monkeypatch.setattr(saving, "write_changes", crash)
    with pytest.raises(RuntimeError):
        polling.poll("r1")
    monkeypatch.undo()
    assert unpublished(watcher) == 0 and watcher.stream_entries() == []
    result = polling.poll("r1", owner="another-worker")  # the crashed worker's lease was released on failure
    assert [(e.change, e.tag) for e in result.events] == [("added", "v2")]
