"""The beat tick's claim: each due slot is dispatched once, however many schedulers tick."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.conftest import Watcher
from tests.support.polls import set_row, wait_for
from tests.support.sqlcount import sent
from watcher.db import session_scope
from watcher.models import Registry
from watcher.polling import scheduler
from watcher.polling.scheduler import EPOCH, PARK, claim_due, next_slot, phase_of
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_next_slot_keeps_the_grid() -> None:
    assert next_slot(60, T0) == T0 + timedelta(seconds=60)
    assert next_slot(60, T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=60)
    assert next_slot(60, T0 + timedelta(seconds=185)) == T0 + timedelta(seconds=240)  # missed slots are skipped
    assert next_slot(60, T0 + timedelta(seconds=185), phase=7) == T0 + timedelta(seconds=187)  # its own offset


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_due_registry_is_claimed_once(watcher: Watcher) -> None:
    with session_scope(watcher.engine) as session:
        for name, interval in (("fast", 10), ("slow", 3600)):
            row, _ = registries.save(
                session, RegistrySpec(name, "oci", "https://r.example.com", interval_seconds=interval)
            )
            row.next_poll_at = T0
    assert sorted(claim_due(watcher.engine, T0)) == ["fast", "slow"]
    assert claim_due(watcher.engine, T0) == []  # a second scheduler at the same tick gets nothing
    start_polls(watcher, "fast", "slow")
    fast = next_slot(10, T0, phase_of("fast", 10))
    assert claim_due(watcher.engine, fast) == ["fast"]
    with session_scope(watcher.engine) as session:
        slots = dict(session.execute(select(Registry.name, Registry.next_poll_at)).all())
    assert slots == {"fast": fast + timedelta(seconds=10), "slow": next_slot(3600, T0, phase_of("slow", 3600))}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_tick_claims_its_registries_in_one_transaction_one_statement_each(watcher: Watcher) -> None:
    """A commit is most of what a claim costs the database server, and a thousand registries a minute are a
    thousand claims: the tick reads what is due (one transaction), then claims it all in one more."""
    for name in ("a", "b", "c"):
        _save(watcher, name, 10, T0)
    with sent(watcher.engine) as seen:
        assert sorted(claim_due(watcher.engine, T0)) == ["a", "b", "c"]
    assert seen.commits == 2
    not_flushed = ["SET"] if watcher.engine.dialect.name == "postgresql" else []  # `bookkeeping`: no WAL wait
    # what is due, the workspaces' limits and holds; then the claims
    assert seen.verbs() == ["SELECT"] * 3 + not_flushed + ["UPDATE registries"] * 3


def test_a_claim_the_database_refuses_fails_the_ticks_transaction_then_only_itself(
    watcher: Watcher, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One statement the database refuses rolls the tick's claims back: claimed again one transaction each,
    the refused registry is set aside and the others are dispatched."""
    for name in ("a", "refused", "c"):
        _save(watcher, name, 10, T0)
    claim_slot = scheduler._claim_slot

    def refusing(session: Any, due: scheduler.Due, now: datetime, **options: Any) -> scheduler.Claim:
        if due.key == "refused":
            raise OperationalError("UPDATE registries", {}, Exception("canceling statement due to lock timeout"))
        return claim_slot(session, due, now, **options)

    monkeypatch.setattr(scheduler, "_claim_slot", refusing)
    with caplog.at_level(logging.ERROR, logger="watcher"):
        assert sorted(claim_due(watcher.engine, T0)) == ["a", "c"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "watcher"]
    assert line.startswith("registry 'refused': not polled: its schedule cannot be computed (")


def start_polls(watcher: Watcher, *names: str) -> None:
    """The polls dispatched for `names` start (each claims its registry) and finish (each releases it)."""
    from watcher.polling import leases

    with session_scope(watcher.engine) as session:
        for name in names:
            registry_id = registries.find(session, name).id
            assert leases.claim(session, registry_id, f"poll of {name}")
            leases.release(session, registry_id, f"poll of {name}")


def _save(watcher: Watcher, name: str, interval: int, slot: datetime) -> None:
    with session_scope(watcher.engine) as session:
        row, _ = registries.save(session, RegistrySpec(name, "oci", "https://r.example.com", interval_seconds=60))
        row.next_poll_at = slot
        row.interval_seconds = interval  # stored as is: a row from before intervals were bounded


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("interval", [0, -30])
def test_a_row_that_cannot_be_scheduled_is_logged_once_and_never_stops_the_others(
    watcher: Watcher, caplog: pytest.LogCaptureFixture, interval: int
) -> None:
    _save(watcher, "before", 10, T0)
    _save(watcher, "broken", interval, T0)
    _save(watcher, "after", 10, T0)
    with caplog.at_level(logging.ERROR, logger="watcher"):
        assert sorted(claim_due(watcher.engine, T0)) == ["after", "before"]
        start_polls(watcher, "after", "before")
        assert sorted(claim_due(watcher.engine, T0 + timedelta(seconds=10))) == ["after", "before"]
    lines = [r.getMessage() for r in caplog.records if r.name == "watcher"]
    assert len(lines) == 1, lines  # once, not once a tick
    assert lines[0].startswith(
        f"registry 'broken': not polled: its schedule cannot be computed (interval_seconds {interval} "
    )
    assert lines[0].endswith("fix it with `watcher registry apply` (tried again in 1h)")
    _save(watcher, "broken", 10, T0)  # fixed: due again once the hour it was set aside has passed
    assert "broken" in claim_due(watcher.engine, T0 + PARK + timedelta(seconds=1))


def test_an_interval_past_the_calendar_is_set_aside_not_raised(
    watcher: Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    _save(watcher, "huge", 3_000_000 * 86400, T0)  # `--interval 3000000d`, stored by an older release
    _save(watcher, "fine", 10, T0)
    with caplog.at_level(logging.ERROR, logger="watcher"):
        assert claim_due(watcher.engine, T0) == ["fine"]
    assert [r.getMessage() for r in caplog.records if r.name == "watcher"] == [
        "registry 'huge': not polled: its schedule cannot be computed (interval_seconds 259200000000 puts the "
        "next poll past the year 9999); fix it with `watcher registry apply` (tried again in 1h)"
    ]


def test_a_new_interval_starts_a_new_grid_at_once(watcher: Watcher) -> None:
    """A row the tick set aside, fixed with `registry apply`, does not wait out the hour."""
    from watcher.models import utcnow

    _save(watcher, "broken", 0, T0)
    claim_due(watcher.engine, T0)  # set aside for PARK
    with session_scope(watcher.engine) as session:
        registries.save(session, RegistrySpec("broken", "oci", "https://r.example.com", interval_seconds=120))
    assert claim_due(watcher.engine, utcnow()) == ["broken"]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_dispatched_slot_waits_in_due_since_until_a_poll_claims_the_registry(watcher: Watcher) -> None:
    from watcher.polling import leases

    _save(watcher, "queued", 10, T0)
    assert claim_due(watcher.engine, T0 + timedelta(seconds=3)) == ["queued"]
    assert claim_due(watcher.engine, T0 + timedelta(seconds=12)) == []  # still waiting: not queued twice

    def due_since() -> datetime | None:
        with session_scope(watcher.engine) as session:
            return registries.find(session, "queued").due_since

    assert due_since() == T0
    with session_scope(watcher.engine) as session:
        assert leases.claim(session, registries.find(session, "queued").id, "a poll")
    assert due_since() is None


# ---- spread: registries of one interval fall due over the interval, each on a grid of its own -------------
def test_a_phase_is_a_stable_hash_of_the_name() -> None:
    """The same in every process and release (not Python's salted `hash`)."""
    assert (phase_of("team-a", 60), phase_of("team-a", 3600)) == (36, 3156)


def _save_many(watcher: Watcher, names: list[str], interval: int, slot: datetime) -> None:
    with session_scope(watcher.engine) as session:
        for name in names:
            row, _ = registries.save(
                session, RegistrySpec(name, "oci", "https://r.example.com", interval_seconds=interval)
            )
            row.next_poll_at = slot


def slots(watcher: Watcher) -> dict[str, datetime]:
    with session_scope(watcher.engine) as session:
        return dict(session.execute(select(Registry.name, Registry.next_poll_at)).all())


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_registries_registered_together_fall_due_spread_over_their_interval(watcher: Watcher) -> None:
    names = [f"team-{i:03d}" for i in range(120)]
    _save_many(watcher, names, 60, T0)  # one `registry apply`: all due at once, the first time
    assert len(claim_due(watcher.engine, T0)) == 120
    start_polls(watcher, *names)
    after = slots(watcher)
    assert all(T0 < slot <= T0 + timedelta(seconds=60) for slot in after.values())
    per_second: dict[datetime, int] = {}
    for slot in after.values():
        per_second[slot] = per_second.get(slot, 0) + 1
    assert len(per_second) >= 40 and max(per_second.values()) <= 8, sorted(per_second.values())  # ~2 a second
    # each on its own grid: a late tick does not shift it, and every slot keeps the registry's phase
    late = T0 + timedelta(seconds=60 + 25)
    claimed = claim_due(watcher.engine, late)
    assert sorted(claimed) == names
    assert slots(watcher) == {name: next_slot(60, late, phase_of(name, 60)) for name in names}
    assert all(int((slot - T0).total_seconds()) % 60 == phase_of(name, 60) for name, slot in slots(watcher).items())


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_registries_of_a_minute_take_their_first_polls_on_their_grid_a_longer_interval_at_once(
    watcher: Watcher,
) -> None:
    """1,000 registries of a minute registered together would otherwise all be due at once, and then fall due
    again on their grids while those baselines run: twice a minute's work in the first minute."""
    from watcher.models import utcnow

    names = [f"team-{i:03d}" for i in range(120)]
    before = utcnow()
    with session_scope(watcher.engine) as session:
        for name in names:  # as one `registry apply` saves them
            spec = RegistrySpec(name, "oci", "https://r.example.com", interval_seconds=60)
            registries.save(session, spec, together=True)
        spec = RegistrySpec("hourly", "oci", "https://r.example.com", interval_seconds=3600)
        registries.save(session, spec, together=True)
    added = watcher.add_registry("added", "https://r.example.com", "--interval", "30s", "--no-verify")
    assert added.exit_code == 0, added.output
    after = utcnow()
    first = slots(watcher)
    assert before <= first.pop("hourly") <= after  # an hour is not waited for: polled at once
    assert before <= first.pop("added") <= after  # one `registry add`: a person waits for it, polled at once
    for name, slot in first.items():  # each at its first slot: its own phase, within the minute
        assert before < slot <= after + timedelta(seconds=60) and slot.microsecond == 0
        assert int((slot - EPOCH).total_seconds()) % 60 == phase_of(name, 60)
    per_second: dict[datetime, int] = {}
    for slot in first.values():
        per_second[slot] = per_second.get(slot, 0) + 1
    assert len(per_second) >= 40 and max(per_second.values()) <= 8, sorted(per_second.values())  # ~2 a second
    before = utcnow()
    with session_scope(watcher.engine) as session:  # a new interval of a minute or less: its first slot too
        spec = RegistrySpec("hourly", "oci", "https://r.example.com", interval_seconds=20)
        registries.save(session, spec, together=True)
    slot = slots(watcher)["hourly"]
    assert before < slot <= utcnow() + timedelta(seconds=20)
    assert int((slot - EPOCH).total_seconds()) % 20 == phase_of("hourly", 20)
    before = utcnow()
    with session_scope(watcher.engine) as session:  # the same change alone (one entry, the API): at once
        registries.save(session, RegistrySpec("hourly", "oci", "https://r.example.com", interval_seconds=30))
    assert before <= slots(watcher)["hourly"] <= utcnow()


def test_a_changed_interval_starts_a_new_grid(watcher: Watcher) -> None:
    from watcher.models import utcnow

    _save_many(watcher, ["team-a"], 60, T0)
    claim_due(watcher.engine, T0)
    start_polls(watcher, "team-a")
    with session_scope(watcher.engine) as session:
        registries.save(session, RegistrySpec("team-a", "oci", "https://r.example.com", interval_seconds=3600))
    now = utcnow()
    assert claim_due(watcher.engine, now) == ["team-a"]  # at once...
    assert slots(watcher)["team-a"] == next_slot(3600, now, 3156)  # ...then on the new interval's grid


# ---- nothing queued twice: a slot passing while the poll waits or runs is lag, not another task ----------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_registry_whose_poll_waits_in_the_queue_is_not_queued_again(watcher: Watcher) -> None:
    _save(watcher, "waits", 60, T0)
    assert claim_due(watcher.engine, T0) == ["waits"]
    for minutes in (1, 2, 3):  # the pool is busy: the poll has not started
        now = T0 + timedelta(minutes=minutes, seconds=59)
        assert claim_due(watcher.engine, now) == []
        with session_scope(watcher.engine) as session:
            row = registries.find(session, "waits")
            assert row.due_since == T0  # the lag keeps counting from the slot first dispatched
            assert row.next_poll_at > now  # the slots that passed were skipped, not left to pile up
    start_polls(watcher, "waits")  # it starts: it served the slots that passed while it waited
    slot = slots(watcher)["waits"]
    assert claim_due(watcher.engine, slot) == ["waits"]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_registry_whose_poll_runs_past_its_next_slot_is_polled_once_after_it(watcher: Watcher) -> None:
    from watcher.polling import leases

    _save(watcher, "slow", 60, T0)
    assert claim_due(watcher.engine, T0) == ["slow"]
    with session_scope(watcher.engine) as session:  # the poll starts, and runs for minutes
        assert leases.claim(session, registries.find(session, "slow").id, "a long poll")
    missed = slots(watcher)["slow"]
    for seconds in (1, 61, 121):
        assert claim_due(watcher.engine, missed + timedelta(seconds=seconds)) == []
    assert slots(watcher)["slow"] == missed  # still due: the lag counts from the slot it missed
    with session_scope(watcher.engine) as session:
        leases.release(session, registries.find(session, "slow").id, "a long poll")
    done = missed + timedelta(seconds=130)
    assert claim_due(watcher.engine, done) == ["slow"]  # one poll for the slots it missed, not three
    assert slots(watcher)["slow"] == next_slot(60, done, phase_of("slow", 60))


def test_a_poll_lost_from_the_queue_is_dispatched_again(watcher: Watcher) -> None:
    _save(watcher, "lost", 60, T0)
    assert claim_due(watcher.engine, T0) == ["lost"]
    later = T0 + timedelta(minutes=5)
    assert claim_due(watcher.engine, later, lost=lambda waiting: set()) == []
    assert claim_due(watcher.engine, later + timedelta(minutes=1), lost=lambda waiting: set(waiting)) == ["lost"]


def test_a_queued_mark_lapses_after_a_while(watcher: Watcher) -> None:
    from watcher.polling import pool

    pool.mark_queued(watcher.redis, ["a"])
    assert pool.lost(watcher.redis, ["a", "b"]) == {"b"}
    assert 0 < watcher.redis.ttl(pool.queued_key("a")) <= pool.LOST_AFTER_SECONDS


def test_a_scheduled_poll_that_finds_its_registry_busy_is_not_left_waiting(watcher: Watcher) -> None:
    from watcher.models import utcnow
    from watcher.tasks.jobs import poll_registry

    _save(watcher, "busy", 60, T0)
    assert claim_due(watcher.engine, T0) == ["busy"]
    set_row(watcher, "busy", lease_owner="a manual poll", lease_until=utcnow() + timedelta(minutes=1))
    assert poll_registry("busy") == 0  # the scheduled poll starts, finds the manual one running...
    with session_scope(watcher.engine) as session:
        assert registries.find(session, "busy").due_since is None  # ...and the registry is not left "queued"


# ---- the tick, with the real broker: nothing twice, and no more than the pool can start soon -----------
def queued_polls(client: redis.Redis, key: str) -> list[str]:
    """The registries of the poll tasks waiting in the broker's queue, oldest first."""
    messages = [json.loads(m) for m in client.lrange(key, 0, -1)]
    polls = [m["headers"] for m in messages if m["headers"]["task"] == "watcher.poll"]
    return [ast.literal_eval(h["argsrepr"])[0] for h in reversed(polls)]


def _next_second() -> Callable[[], bool]:
    from watcher.models import utcnow

    at = utcnow().replace(microsecond=0) + timedelta(seconds=1)
    return lambda: utcnow() >= at


def test_the_tick_queues_a_registry_once_while_its_poll_waits(watcher: Watcher, worker_queue: str) -> None:
    from watcher.polling import pool
    from watcher.tasks.jobs import tick

    for name in ("a", "b"):
        _save(watcher, name, 1, T0)  # every second, and no worker to take the polls
    pool.announce(watcher.redis, "a worker", 2)
    try:
        for _ in range(3):
            assert wait_for(_next_second(), 5)  # a slot of each has passed
            tick()
        assert sorted(queued_polls(watcher.redis, worker_queue)) == ["a", "b"]
    finally:
        watcher.redis.delete(pool.workers_key())


def test_the_tick_queues_no_more_than_the_pool_can_start_soon(watcher: Watcher, worker_queue: str) -> None:
    from watcher.models import utcnow
    from watcher.polling import pool
    from watcher.tasks.jobs import tick
    from watcher.web.metrics import schedule_lag

    now = utcnow()
    names = [f"r{i:02d}" for i in range(pool.QUEUE_PER_PROCESS + 10)]
    for i, name in enumerate(names):  # r00 the most overdue
        _save(watcher, name, 60, now - timedelta(seconds=100 - i))
    pool.announce(watcher.redis, "a worker", 1)  # one pool process, busy: nothing is taken from the queue
    try:
        assert tick() == names[: pool.QUEUE_PER_PROCESS]  # the most overdue first, no more than it can start soon
        assert tick() == []  # the queue is full: the others stay due...
        assert queued_polls(watcher.redis, worker_queue) == names[: pool.QUEUE_PER_PROCESS]
        with session_scope(watcher.engine) as session:
            assert schedule_lag(session) >= 100 - 1  # ...and the lag says how late the most overdue is
        for _ in range(5):  # the pool takes five
            watcher.redis.rpop(worker_queue)
        assert tick() == names[pool.QUEUE_PER_PROCESS : pool.QUEUE_PER_PROCESS + 5]
    finally:
        watcher.redis.delete(pool.workers_key())
