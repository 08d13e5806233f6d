"""What a poll adds to the deployment's counters: outcome, duration, events by change, requests by status."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.migrations import migrations
from tests.support.polls import runs_of, set_row
from watcher.db import session_scope
from watcher.errors import AuthError
from watcher.polling import poll as polling
from watcher.read import counters
from watcher.read.pollmetrics import finished
from watcher.registrations import vault
from watcher.registry.deadline import Interrupted


def counted(watcher: Watcher, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    with session_scope(watcher.engine) as session:
        rows = counters.read_all(session)
    return {tuple(sorted(labels.items())): value for name, labels, value in rows if name == metric}


def by(rows: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    return {dict(key)[label]: value for key, value in rows.items()}


def test_an_abandoned_poll_counts_its_requests_but_no_outcome() -> None:
    increments = finished("r1", "oci", "abandoned", 3.0, Counter({"200": 2, "error": 1}))
    assert {(i.metric, i.labels.get("code"), i.amount) for i in increments} == {
        ("watcher_registry_requests_total", "200", 2),
        ("watcher_registry_requests_total", "error", 1),
    }
    ok = finished("r1", "oci", "ok", 0.7, Counter({"200": 1}), ["added", "added", "updated"])
    assert [i.labels["change"] for i in ok if i.metric == "watcher_events_total"] == ["added", "added", "updated"]
    assert next(i.labels["le"] for i in ok if i.metric == "watcher_poll_duration_seconds_bucket") == "1.0"
    durations = [i.labels for i in ok if i.metric.startswith("watcher_poll_duration_seconds")]
    assert {tuple(sorted(set(labels) - {"le"})) for labels in durations} == {("provider",)}  # per provider only


def test_a_registry_is_labelled_with_its_workspace_and_its_name_apart() -> None:
    """A registry's key (`team-b/r1`; `r1` in `default`) becomes the labels `workspace` and `registry`, so
    registries named alike in two workspaces are two series; `default`'s is stored as before workspaces."""
    for key, workspace in (("team-b/r1", "team-b"), ("r1", "default")):
        increments = finished(key, "oci", "ok", 0.7, Counter({"200": 1}), ["added"])
        named = [i.labels for i in increments if "registry" in i.labels]
        assert len(named) == 3 and all((n["workspace"], n["registry"]) == (workspace, "r1") for n in named)
    stored = {counters.labels_key(i.labels) for i in finished("r1", "oci", "ok", 0.7, Counter(), ["added"])}
    assert '{"change":"added","registry":"r1"}' in stored


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_polls_count_their_outcome_events_and_every_request_by_status(
    watcher: Watcher, token_registry: RegistryEnv, unique_repo: str
) -> None:
    for tag in ("v1", "v2"):
        token_registry.client.push_image(f"{unique_repo}/app", tag)
    added = watcher.add_registry(
        "r1", token_registry.url, "--username", "alice", "--password", "s3cret-pass", "--repository", f"{unique_repo}/*"
    )
    assert added.exit_code == 0, added.output
    polling.poll("r1")  # the baseline: no events
    token_registry.client.push_image(f"{unique_repo}/app", "v3")
    token_registry.client.push_image(f"{unique_repo}/app", "v1", seed="moved")
    result = polling.poll("r1")
    assert sorted(e.change for e in result.events) == ["added", "updated"]
    assert result.seconds > 0

    assert by(counted(watcher, "watcher_polls_total"), "outcome") == {"ok": 2}
    assert by(counted(watcher, "watcher_events_total"), "change") == {"added": 1, "updated": 1}
    codes = by(counted(watcher, "watcher_registry_requests_total"), "code")
    assert codes["200"] > 0 and codes["401"] > 0, codes  # the registry's challenges are requests too
    assert sum(codes.values()) == sum(run.requests for run in runs_of(watcher, "r1"))
    assert counted(watcher, "watcher_poll_duration_seconds_count") == {(("provider", "oci"),): 2.0}  # no registry


def test_a_failed_poll_counts_as_failed_with_the_requests_it_made(
    watcher: Watcher, basic_registry: RegistryEnv, unique_repo: str
) -> None:
    basic_registry.client.push_image(f"{unique_repo}/app", "v1")
    added = watcher.add_registry(
        "r1", basic_registry.url, "--username", "alice", "--password", "s3cret-pass", "--repository", f"{unique_repo}/*"
    )
    assert added.exit_code == 0, added.output
    set_row(watcher, "r1", credentials=vault.encrypt({"username": "alice", "password": "rotated-elsewhere"}))
    with pytest.raises(AuthError):
        polling.poll("r1")
    assert by(counted(watcher, "watcher_polls_total"), "outcome") == {"failed": 1}
    assert by(counted(watcher, "watcher_registry_requests_total"), "code").get("401", 0) >= 1
    assert sum(counted(watcher, "watcher_poll_duration_seconds_count").values()) == 1


def test_an_interrupted_poll_is_no_outcome(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        polling.poll("r1", stop=stop)
    assert runs_of(watcher, "r1")[-1].outcome == "abandoned"
    assert counted(watcher, "watcher_polls_total") == {}
    assert counted(watcher, "watcher_poll_duration_seconds_count") == {}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_migration_0009_folds_per_registry_durations_into_their_providers(watcher: Watcher) -> None:
    """The per-registry histogram rows a release before 0009 counted are summed per provider, nothing lost;
    other counters are left alone; up, down and up again."""
    from watcher.db import get_engine

    engine = get_engine()
    old = [({"registry": "r1", "provider": "oci"}, 0.2), ({"registry": "r2", "provider": "oci"}, 3.0)]
    old += [({"registry": "r1", "provider": "oci"}, 40.0), ({"registry": "r3", "provider": "ecr"}, 1.0)]
    with migrations(engine) as schema:
        before = schema.before("0009")
        schema.down(before)
    with session_scope(engine) as session:
        for labels, seconds in old:
            counters.add(session, counters.observation("watcher_poll_duration_seconds", labels, seconds))
        counters.add(session, [counters.Increment("watcher_polls_total", {"registry": "r1", "provider": "oci"}, 3)])
    with migrations(engine) as schema:
        schema.up("0009")
        schema.down(before)
        schema.up("head")

    assert counted(watcher, "watcher_poll_duration_seconds_count") == {
        (("provider", "oci"),): 3.0,
        (("provider", "ecr"),): 1.0,
    }
    sums = counted(watcher, "watcher_poll_duration_seconds_sum")
    assert sums[(("provider", "oci"),)] == pytest.approx(43.2)
    buckets = counted(watcher, "watcher_poll_duration_seconds_bucket")
    assert buckets[(("le", "0.5"), ("provider", "oci"))] == 1.0
    assert buckets[(("le", "5.0"), ("provider", "oci"))] == 2.0
    assert buckets[(("le", "60.0"), ("provider", "oci"))] == 3.0
    assert {tuple(dict(key)) for key in buckets} == {("le", "provider")}
    assert counted(watcher, "watcher_polls_total") == {(("provider", "oci"), ("registry", "r1")): 3.0}
