"""The beat tick's claim: each due slot is dispatched once, however many schedulers tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from watcher import registries
from watcher.db import session_scope
from watcher.models import Registry
from watcher.scheduler import claim_due, next_slot
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
