"""Selection events through real polls against the real registry: a policy's selection is evaluated in
the transaction that commits its repository, and one `selected` event follows the tag events that caused it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Watcher
from tests.support.cdevents import validate_cloudevent
from tests.support.fixtures import RegistryEnv
from watcher.db import session_scope
from watcher.errors import InputError
from watcher.policies.store import PolicySpec, save
from watcher.read.policies import policy, selection_history
from watcher.schema import DEFAULT_WORKSPACE_ID


def add_policy(watcher: Watcher, repository: str, name: str = "app", **options: object) -> list[dict[str, Any]]:
    with session_scope(watcher.engine) as session:
        saved = save(session, PolicySpec.build(name, "r1", repository, **options), workspace_id=DEFAULT_WORKSPACE_ID)
    return [json.loads(event.cloudevent) for event in saved.events]


def changes(watcher: Watcher) -> list[tuple[str, str, str, str]]:
    return [(e["change"], e["tag"], e.get("policy", ""), e.get("previous_tag", "")) for e in watcher.stream_entries()]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_push_the_range_admits_is_selected_after_its_added_event_and_a_delete_selects_back(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    first = registry.client.push_image(unique_repo, "1.2.3")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    created = add_policy(watcher, unique_repo, semver="^1.2")
    assert [c["data"]["subject"]["content"]["tag"] for c in created] == ["1.2.3"]  # the first selection
    validate_cloudevent(created[0])

    newer = registry.client.push_image(unique_repo, "1.2.4")
    polled = watcher.cli("poll", "r1")
    assert polled.exit_code == 0, polled.output
    assert changes(watcher) == [  # the policy's first selection, published by this poll's relay, then the poll's
        ("selected", "1.2.3", "app", ""),
        ("added", "1.2.4", "", ""),
        ("selected", "1.2.4", "app", "1.2.3"),
    ]

    registry.client.push_image(unique_repo, "2.0.0")
    assert watcher.cli("poll", "r1").exit_code == 0
    assert changes(watcher)[3:] == [("added", "2.0.0", "", "")]  # outside the range: no selection event

    registry.client.delete(unique_repo, "1.2.4")
    assert watcher.cli("poll", "r1").exit_code == 0
    assert changes(watcher)[4:] == [("removed", "1.2.4", "", ""), ("selected", "1.2.3", "app", "1.2.4")]
    last = watcher.stream_entries()[-1]
    assert (last["digest"], last["previous_digest"]) == (first, newer)
    cloudevent = json.loads(last["cloudevent"])
    validate_cloudevent(cloudevent)
    assert cloudevent["type"] == "dev.cdeventsx.watcher-policy.selected.0.1.0"

    with session_scope(watcher.engine) as session:
        view = policy(session, "app", workspace_id=DEFAULT_WORKSPACE_ID)
        history = selection_history(session, "app", workspace_id=DEFAULT_WORKSPACE_ID)
    assert (view.tag, view.digest, view.considered, view.ignored) == ("1.2.3", first, 2, 0)
    assert view.reference == f"{registry.host}/{unique_repo}:1.2.3@{first}"
    assert [(row.tag, row.previous_tag) for row in history] == [("1.2.3", "1.2.4"), ("1.2.4", "1.2.3"), ("1.2.3", "")]


def test_a_policy_of_that_name_is_refused_and_a_replace_that_changes_nothing_writes_no_event(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(unique_repo, "1.0.0")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    assert len(add_policy(watcher, unique_repo, semver="*")) == 1
    with pytest.raises(InputError, match="policy 'app' exists"):
        add_policy(watcher, unique_repo, semver="*")
    with session_scope(watcher.engine) as session:
        again = save(session, PolicySpec.build("app", "r1", unique_repo, semver="*"), workspace_id=1, replace=True)
    assert (again.created, again.changed, again.events) == (False, False, [])
