"""The beat tick's claim: each due slot is dispatched once, however many schedulers tick."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from watcher import registries
from watcher.db import session_scope
from watcher.models import Registry
from watcher.scheduler import PARK, claim_due, next_slot
from watcher.spec import RegistrySpec

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_next_slot_keeps_the_grid() -> None:
    assert next_slot(T0, 60, T0) == T0 + timedelta(seconds=60)
    assert next_slot(T0, 60, T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=60)
    assert next_slot(T0, 60, T0 + timedelta(seconds=185)) == T0 + timedelta(seconds=240)  # missed slots are skipped


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
    assert claim_due(watcher.engine, T0 + timedelta(seconds=10)) == ["fast"]
    with session_scope(watcher.engine) as session:
        slots = dict(session.execute(select(Registry.name, Registry.next_poll_at)).all())
    assert slots == {"fast": T0 + timedelta(seconds=20), "slow": T0 + timedelta(seconds=3600)}


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
    from watcher import leases

    _save(watcher, "queued", 10, T0)
    assert claim_due(watcher.engine, T0 + timedelta(seconds=3)) == ["queued"]
    assert claim_due(watcher.engine, T0 + timedelta(seconds=12)) == ["queued"]  # still waiting: the first slot stays

    def due_since() -> datetime | None:
        with session_scope(watcher.engine) as session:
            return registries.find(session, "queued").due_since

    assert due_since() == T0
    with session_scope(watcher.engine) as session:
        assert leases.claim(session, registries.find(session, "queued").id, "a poll")
    assert due_since() is None
