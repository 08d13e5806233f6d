"""`watcher events`: the history in the database, filtered, and kept when a registry is removed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.conftest import Watcher
from watcher.db import session_scope
from watcher.diff import Change, ChangeKind
from watcher.outbox.events import new_event
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def seed(watcher: Watcher) -> None:
    with session_scope(watcher.engine) as session:
        for name in ("r1", "r2"):
            row, _ = registries.save(session, RegistrySpec(name, "oci", f"https://{name}.example.com"))
            for day in range(3):
                for repo in ("team/app", "team/api"):
                    change = Change(ChangeKind.ADDED, repo, f"d{day}", "sha256:" + f"{day}" * 64)
                    session.add(new_event(row.id, name, row.url, change, T0 + timedelta(days=day)))


def shown(watcher: Watcher, *args: str) -> list[tuple[str, str, str]]:
    result = watcher.cli("events", "--json", *args)
    assert result.exit_code == 0, result.output
    return [(e["registry"], e["repository"], e["tag"]) for e in map(json.loads, result.stdout.splitlines())]


def test_filters_combine_and_the_newest_come_oldest_first(watcher: Watcher) -> None:
    seed(watcher)
    assert len(shown(watcher)) == 12
    assert shown(watcher, "--registry", "r2", "--repository", "team/api") == [
        ("r2", "team/api", "d0"),
        ("r2", "team/api", "d1"),
        ("r2", "team/api", "d2"),
    ]
    assert shown(watcher, "--registry", "r1", "--since", "2026-11-02T00:00:00Z") == [
        ("r1", "team/app", "d1"),
        ("r1", "team/api", "d1"),
        ("r1", "team/app", "d2"),
        ("r1", "team/api", "d2"),
    ]
    assert shown(watcher, "--limit", "2") == [("r2", "team/app", "d2"), ("r2", "team/api", "d2")]


def test_a_bad_since_is_one_line(watcher: Watcher) -> None:
    result = watcher.cli("events", "--since", "yesterday")
    assert result.exit_code == 1 and "--since 'yesterday' is not an ISO 8601 time" in result.stderr


def test_removing_a_registry_keeps_its_history(watcher: Watcher) -> None:
    seed(watcher)
    assert watcher.cli("registry", "remove", "r1").stdout.strip() == "removed registry 'r1'"
    assert "r1" not in watcher.cli("registry", "list").stdout
    assert len(shown(watcher, "--registry", "r1")) == 6


def test_a_since_past_the_calendar_in_utc_is_one_line(watcher: Watcher) -> None:
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        result = watcher.cli("events", "--since", moment)
        assert result.exit_code == 1, result.output
        assert f"--since {moment} is out of range: use a time from year 1 to 9999 in UTC" in result.stderr
    assert watcher.cli("events", "--since", "0001-01-01T00:00:00-01:00").exit_code == 0  # in year 1 in UTC
