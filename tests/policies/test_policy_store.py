"""Two doors creating the same policy at once: the unique name decides, and the loser gets one line."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from watcher.db import session_scope
from watcher.errors import InputError
from watcher.policies import store
from watcher.policies.store import PolicySpec, save


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_two_racing_creations_of_one_name_save_one_and_refuse_the_other_in_one_line(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo, "--no-verify").exit_code == 0
    both_read = threading.Barrier(2, timeout=10)
    insert_named = store.insert_named

    def after_both_read(*args: Any) -> Any:
        both_read.wait()  # each has seen no policy of that name
        return insert_named(*args)

    monkeypatch.setattr(store, "insert_named", after_both_read)
    outcomes: list[str] = []

    def create(range_: str) -> None:
        try:
            with session_scope(watcher.engine) as session:
                save(session, PolicySpec.build("app", "r1", unique_repo, semver=range_), workspace_id=1)
            outcomes.append("saved")
        except InputError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=create, args=(r,)) for r in ("^1", "^2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [
        "policy 'app' exists: remove it first (`watcher policy rm app`), or edit it with `watcher registry apply`",
        "saved",
    ]
