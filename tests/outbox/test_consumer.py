"""`watcher events tail`: live tail, and consumer groups that pick up what a dead member left."""

from __future__ import annotations

import json
import threading

from sqlalchemy import select

from tests.conftest import Watcher
from tests.outbox.test_relay import record
from watcher.db import session_scope
from watcher.diff import Change, ChangeKind
from watcher.models import Registry, utcnow
from watcher.outbox.consumer import ensure_group, read_group
from watcher.outbox.events import new_event
from watcher.outbox.relay import relay


def test_a_group_member_claims_what_a_dead_member_left_pending(watcher: Watcher) -> None:
    ensure_group(watcher.redis, watcher.stream, "cd")
    ids = record(watcher, 5)
    relay(watcher.redis)
    # A consumer reads three entries and dies before acknowledging them.
    watcher.redis.xreadgroup("cd", "dead", {watcher.stream: ">"}, count=3)
    result = watcher.cli(
        "events", "tail", "--group", "cd", "--consumer", "alive", "--count", "5", "--claim-idle", "0", "--json"
    )
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["event_id"] for line in result.stdout.splitlines()]
    assert sorted(got) == sorted(ids)
    assert watcher.redis.xpending(watcher.stream, "cd")["pending"] == 0  # all acknowledged


def test_own_unacknowledged_entries_come_first_after_a_restart(watcher: Watcher) -> None:
    ensure_group(watcher.redis, watcher.stream, "cd")
    ids = record(watcher, 4)
    relay(watcher.redis)
    watcher.redis.xreadgroup("cd", "me", {watcher.stream: ">"}, count=2)  # read, then crashed
    entries = read_group(watcher.redis, watcher.stream, "cd", "me", claim_idle_ms=60_000, block_ms=100)
    first_two = [next(entries)[1]["event_id"] for _ in range(2)]
    assert first_two == ids[:2]


def test_live_tail_prints_only_new_events(watcher: Watcher) -> None:
    record(watcher, 2)
    relay(watcher.redis)  # already on the stream before the tail starts: not shown
    output: list[str] = []
    thread = threading.Thread(target=lambda: output.append(watcher.cli("events", "tail", "--count", "1").stdout))
    thread.start()
    for attempt in range(60):  # append until the tail, once it is listening, has seen one
        with session_scope(watcher.engine) as session:
            registry_id = session.scalar(select(Registry.id))
            assert registry_id is not None
            change = Change(ChangeKind.REMOVED, "team/app", f"late{attempt}", "sha256:" + "0" * 64)
            session.add(new_event(registry_id, "r1", "https://registry.example.com", change, utcnow()))
        relay(watcher.redis)
        thread.join(0.5)
        if not thread.is_alive():
            break
    assert not thread.is_alive()
    assert "removed r1 team/app:late" in output[0]
    assert "t0000" not in output[0]
