"""Reading and arranging the state of polls in tests: runs, leases and stored options of a registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.registry import RegistryClient
from watcher.db import session_scope
from watcher.models import PollRun, Registry
from watcher.polling import poll as polling
from watcher.registrations import store as registries


def runs_of(watcher: Watcher, name: str) -> list[PollRun]:
    """The registry's poll runs, oldest first."""
    with session_scope(watcher.engine) as session:
        registry_id = registries.find(session, name).id
        return list(session.scalars(select(PollRun).where(PollRun.registry_id == registry_id).order_by(PollRun.id)))


def lease_of(watcher: Watcher, name: str) -> str | None:
    with session_scope(watcher.engine) as session:
        return registries.find(session, name).lease_owner


def try_poll(name: str) -> bool:
    """Poll `name` once; False if another poll holds it."""
    try:
        polling.poll(name)
    except polling.Busy:
        return False
    return True


def set_row(watcher: Watcher, name: str, **values: Any) -> None:
    """Store values in the registry's row as they are, bypassing every check (a row from an older release)."""
    with session_scope(watcher.engine) as session:
        row: Registry = registries.find(session, name)
        for key, value in values.items():
            setattr(row, key, value)


def set_options(watcher: Watcher, name: str, **options: Any) -> None:
    with session_scope(watcher.engine) as session:
        row = registries.find(session, name)
        row.options = {**(row.options or {}), **options}


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def push_round(client: RegistryClient, truth: dict[str, dict[str, str]], round_: int) -> None:
    """One round of real changes for the race tests: half the repositories get a new tag, the other half
    have `v1` moved to a new digest; `truth` (repository -> tag -> digest) follows the registry."""
    for i, name in enumerate(sorted(truth)):
        if (i + round_) % 2:
            truth[name][f"t{round_}"] = client.push_image(name, f"t{round_}", seed=f"{round_}")
        else:
            truth[name]["v1"] = client.push_image(name, "v1", seed=f"moved {round_}")
