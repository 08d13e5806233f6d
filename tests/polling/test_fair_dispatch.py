"""A fair share of the worker pool: workspaces take turns when more polls are due than the pool has room
for, each workspace's `max_concurrent_polls` holds across ticks and schedulers, and a registry of another
workspace is dispatched and polled by its key."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from tests.conftest import Watcher
from tests.polling.test_scheduler import queued_polls
from tests.support.polls import runs_of, wait_for
from watcher.db import session_scope
from watcher.models import Registry, Repository
from watcher.polling import leases
from watcher.polling.scheduler import claim_due
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec
from watcher.schema import workspaces

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_pace_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process has timed no poll yet (a pace is a pool process's own moving average)."""
    from watcher.polling import pool

    monkeypatch.setattr(pool, "_pace", pool._Pace())


def add_workspace(watcher: Watcher, name: str, max_concurrent_polls: int | None = None) -> None:
    """A second team's workspace, as the operator's commands will create it."""
    with session_scope(watcher.engine) as session:
        session.execute(insert(workspaces).values(name=name, max_concurrent_polls=max_concurrent_polls))


def add_due(watcher: Watcher, workspace: str, names: list[str], first_slot: datetime) -> list[str]:
    """Registries of a minute in `workspace`, due one second apart from `first_slot` (the first most
    overdue); their keys."""
    keys = []
    with session_scope(watcher.engine) as session:
        for i, name in enumerate(names):
            spec = RegistrySpec(name, "oci", "https://r.example.com", interval_seconds=60, workspace=workspace)
            row, outcome = registries.save(session, spec)
            assert outcome == "created"
            row.next_poll_at = first_slot + timedelta(seconds=i)
            keys.append(spec.key)
    return keys


def start(watcher: Watcher, key: str) -> None:
    """The dispatched poll of `key` starts: it holds the registry's lease."""
    with session_scope(watcher.engine) as session:
        assert leases.claim(session, registries.find(session, key).id, f"poll of {key}")


def finish(watcher: Watcher, key: str) -> None:
    with session_scope(watcher.engine) as session:
        leases.release(session, registries.find(session, key).id, f"poll of {key}")


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_workspaces_take_turns_when_the_pool_is_short_of_room(watcher: Watcher) -> None:
    add_workspace(watcher, "small")
    big = add_due(watcher, "default", [f"big-{i:02d}" for i in range(10)], T0)  # the most overdue
    small = add_due(watcher, "small", ["s0", "s1", "s2"], T0 + timedelta(seconds=30))
    assert small == ["small/s0", "small/s1", "small/s2"]
    now = T0 + timedelta(minutes=1)
    # one round a workspace at a time, each its own most overdue first; the most overdue workspace leads
    assert claim_due(watcher.engine, now, room=4) == [big[0], small[0], big[1], small[1]]
    assert claim_due(watcher.engine, now, room=4) == [big[2], small[2], big[3], big[4]]
    # room for one a tick: the workspace holding fewer polls goes first, whoever is more overdue
    start(watcher, big[0])
    assert claim_due(watcher.engine, now, room=1) == [big[5]]  # 5 held each: the most overdue
    add_due(watcher, "small", ["s3"], now)
    assert claim_due(watcher.engine, now, room=1) == ["small/s3"]  # big holds 6, small 5
    assert claim_due(watcher.engine, now, room=None) == big[6:]  # room for all: everything due goes


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_max_concurrent_polls_counts_queued_and_running_polls_across_ticks(watcher: Watcher) -> None:
    add_workspace(watcher, "capped", max_concurrent_polls=2)
    capped = add_due(watcher, "capped", [f"c{i}" for i in range(5)], T0)
    free = add_due(watcher, "default", [f"f{i}" for i in range(3)], T0 + timedelta(seconds=10))
    now = T0 + timedelta(minutes=1)
    claimed = claim_due(watcher.engine, now)
    assert [key for key in claimed if key in capped] == capped[:2]  # the two most overdue
    assert [key for key in claimed if key in free] == free  # another workspace is not held back
    assert claim_due(watcher.engine, now) == []  # both queued: nothing more
    start(watcher, capped[0])
    assert claim_due(watcher.engine, now) == []  # one running, one queued: still two
    finish(watcher, capped[0])
    assert claim_due(watcher.engine, now) == [capped[2]]  # one ended: one more
    with session_scope(watcher.engine) as session:  # a manual poll running counts too
        assert leases.claim(session, registries.find(session, capped[3]).id, "a manual poll")
    start(watcher, capped[1])
    finish(watcher, capped[1])
    assert claim_due(watcher.engine, now) == []
    with session_scope(watcher.engine) as session:  # the limit raised: the rest go
        session.execute(workspaces.update().where(workspaces.c.name == "capped").values(max_concurrent_polls=None))
    assert claim_due(watcher.engine, now) == [capped[4]]  # c3 is being polled: not due while its lease is held


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_schedulers_ticking_at_once_never_dispatch_past_the_limit(watcher: Watcher) -> None:
    """Two beats (two `watcher run`s) tick at the same moment: each counts the workspace's polls in the
    statement that claims, so together they dispatch up to the limit, not up to twice it."""
    add_workspace(watcher, "capped", max_concurrent_polls=3)
    keys = add_due(watcher, "capped", [f"c{i:02d}" for i in range(30)], T0)
    for round_ in range(4):
        results = at_once(watcher, T0 + timedelta(minutes=1 + round_))
        claimed = results[0] + results[1]
        assert len(claimed) == len(set(claimed)) == 3, results  # the limit, and each poll once
        with session_scope(watcher.engine) as session:
            queued = session.scalars(select(Registry.name).where(Registry.due_since.is_not(None))).all()
        assert sorted(f"capped/{name}" for name in queued) == sorted(claimed)
        for key in claimed:  # they run and end: room for three more
            start(watcher, key)
            finish(watcher, key)
    assert all(key in keys for key in claimed)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_tick_that_read_before_another_claimed_does_not_dispatch_past_the_limit(watcher: Watcher) -> None:
    """Another scheduler claims between this tick's reading of what is due and its own claims (`lost` is
    asked in between): the limit is counted again by each claim, not taken from what the tick read."""
    add_workspace(watcher, "capped", max_concurrent_polls=3)
    keys = add_due(watcher, "capped", [f"c{i:02d}" for i in range(10)], T0)
    now = T0 + timedelta(minutes=1)
    other: list[str] = []

    def meanwhile(waiting: list[str]) -> set[str]:
        other.extend(claim_due(watcher.engine, now))
        return set()

    assert claim_due(watcher.engine, now, lost=meanwhile) == []
    assert other == keys[:3]


def at_once(watcher: Watcher, now: datetime) -> list[list[str]]:
    """What two schedulers ticking at the same moment claim, each."""
    barrier = threading.Barrier(2)
    results: list[list[str]] = [[], []]

    def tick(slot: int) -> None:
        barrier.wait()
        results[slot] = claim_due(watcher.engine, now)

    threads = [threading.Thread(target=tick, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_the_tick_queues_keys_in_turns_and_no_more_than_the_room(watcher: Watcher, worker_queue: str) -> None:
    from watcher.models import utcnow
    from watcher.polling import pool
    from watcher.tasks.jobs import tick

    add_workspace(watcher, "small")
    now = utcnow()
    big = add_due(watcher, "default", [f"big-{i:02d}" for i in range(30)], now - timedelta(seconds=90))
    small = add_due(watcher, "small", ["prod"], now - timedelta(seconds=2))
    pool.announce(watcher.redis, "a worker", 1)
    pool.took(watcher.redis, 0.5)  # polls take half a second here: the queue holds QUEUE_SECONDS of them
    try:
        room = pool.room(watcher.redis)
        assert room == round(pool.QUEUE_SECONDS / 0.5)
        assert tick() == [big[0], small[0], *big[1 : room - 1]]  # small's poll is not behind big's backlog
        assert queued_polls(watcher.redis, worker_queue) == [big[0], "small/prod", *big[1 : room - 1]]
        assert tick() == []  # the queue holds what the pool starts soon
    finally:
        watcher.redis.delete(pool.workers_key(), pool.pace_key())


def test_the_room_is_seconds_of_work_at_the_pools_pace(watcher: Watcher) -> None:
    from watcher.polling import pool

    pool.announce(watcher.redis, "a worker", 2)
    try:
        assert pool.room(watcher.redis) == 2 * pool.QUEUE_PER_PROCESS  # no poll timed yet
        pool.took(watcher.redis, 0.01)
        assert pool.room(watcher.redis) == 2 * pool.QUEUE_PER_PROCESS  # quick polls: never more than that
        pool.took(watcher.redis, 1.6)  # a moving average: one slow poll does not stop the queue...
        pace = 0.01 + pool.PACE_WEIGHT * (1.6 - 0.01)
        assert pool.room(watcher.redis) == math.ceil(2 * pool.QUEUE_SECONDS / pace) == 13
        for _ in range(30):
            pool.took(watcher.redis, 10.0)
        assert pool.room(watcher.redis) == 2  # ...but slow polls leave one waiting a process
        watcher.redis.rpush(pool.queue_keys()[0], "a task")
        assert pool.room(watcher.redis) == 1  # minus what waits already
        process = next(iter(watcher.redis.hkeys(pool.pace_key())))
        watcher.redis.hset(pool.pace_key(), process, "10.0 1")  # lapsed long ago
        assert pool.room(watcher.redis) == 2 * pool.QUEUE_PER_PROCESS - 1
        assert watcher.redis.hlen(pool.pace_key()) == 0
    finally:
        watcher.redis.delete(pool.workers_key(), pool.pace_key(), pool.queue_keys()[0])


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_registries_of_one_name_in_two_workspaces_are_dispatched_and_polled_by_key(
    watcher: Watcher, registry, unique_repo: str, start_worker
) -> None:
    from watcher.polling import pool

    add_workspace(watcher, "team-b")
    for workspace in ("default", "team-b"):
        registry.client.push_image(f"{unique_repo}/{workspace}/app", "v1")
        with session_scope(watcher.engine) as session:
            spec = RegistrySpec(
                "prod",
                "oci",
                registry.url,
                options={"repositories": [f"{unique_repo}/{workspace}/*"]},
                interval_seconds=2,
                workspace=workspace,
            )
            registries.save(session, spec)
    start_worker("w1")

    def polled(key: str) -> bool:
        return sum(run.outcome == "ok" and run.trigger == "schedule" for run in runs_of(watcher, key)) >= 2

    assert wait_for(lambda: polled("prod") and polled("team-b/prod"), 90), (
        runs_of(watcher, "prod"),
        runs_of(watcher, "team-b/prod"),
    )
    with session_scope(watcher.engine) as session:
        for key, workspace in (("prod", "default"), ("team-b/prod", "team-b")):
            registry_id = registries.find(session, key).id
            snapshot = session.scalars(select(Repository.name).where(Repository.registry_id == registry_id)).all()
            assert snapshot == [f"{unique_repo}/{workspace}/app"]  # each its own registry's repositories
    assert watcher.redis.hlen(pool.pace_key()) >= 1  # the worker timed its polls
