"""`/metrics` per workspace: two workspaces' registries named alike are two series, told apart by
`workspace`, and the schedule's lag is one series per workspace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.polls import runs_of, set_row
from tests.web.conftest import Api
from tests.web.test_metrics import METRICS_TOKEN, metrics_token, scrape, seconds_of  # noqa: F401 - a fixture
from watcher.db import session_scope
from watcher.hooks import stats as hookstats
from watcher.models import utcnow
from watcher.polling import poll as polling
from watcher.read import counters, model, pollmetrics
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec
from watcher.schema import workspaces

Samples = dict[str, list[tuple[dict[str, str], float]]]


def add_workspace(watcher: Watcher, name: str) -> None:
    with session_scope(watcher.engine) as session:
        session.execute(insert(workspaces).values(name=name))


def by_workspace(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    """The samples of `name` matching `labels`, by their workspace (each must name one)."""
    found: dict[str, float] = {}
    for sample_labels, value in samples.get(name, []):
        if labels.items() <= sample_labels.items():
            assert sample_labels["workspace"] not in found, (name, sample_labels)
            found[sample_labels["workspace"]] = value
    return found


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_registries_named_alike_in_two_workspaces_are_two_series(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    """`prod` of `default` and `prod` of `team-b` poll the same real registry, each its own repositories:
    every family with a `registry` label shows each with its own workspace and its own numbers."""
    add_workspace(watcher, "team-b")
    scopes = {"default": f"{unique_repo}/a", "team-b": f"{unique_repo}/b"}
    registry.client.push_image(f"{scopes['default']}/app", "v1")
    registry.client.push_image(f"{scopes['team-b']}/app", "v1")
    registry.client.push_image(f"{scopes['team-b']}/db", "v1")
    with session_scope(watcher.engine) as session:
        for workspace, scope in scopes.items():
            spec = RegistrySpec(
                "prod", "oci", registry.url, options={"repositories": [f"{scope}/*"]}, workspace=workspace
            )
            registries.save(session, spec)
    keys = {"default": "prod", "team-b": "team-b/prod"}
    for key in keys.values():
        polling.poll(key)  # the baselines
    registry.client.push_image(f"{scopes['default']}/app", "v2")
    for tag in ("v2", "v3"):
        registry.client.push_image(f"{scopes['team-b']}/app", tag)
    registry.client.push_image(f"{scopes['team-b']}/db", "v2")
    for key in keys.values():
        polling.poll(key)
    with session_scope(watcher.engine) as session:
        team_b_id = registries.find(session, "team-b/prod").id
    hookstats.record(hookstats.Outcome(team_b_id, "team-b/prod", "distribution", "accepted", seen=True))
    hookstats.flush()

    samples = scrape(api)
    prod = {"registry": "prod"}
    assert by_workspace(samples, "watcher_polls_total", **prod, outcome="ok") == {"default": 2.0, "team-b": 2.0}
    assert by_workspace(samples, "watcher_events_total", **prod, change="added") == {"default": 1.0, "team-b": 3.0}
    assert by_workspace(samples, "watcher_webhooks_total", **prod) == {"team-b": 1.0}
    for workspace, key in keys.items():
        sent = sum(v for labels, v in samples["watcher_registry_requests_total"] if labels["workspace"] == workspace)
        assert sent == sum(run.requests for run in runs_of(watcher, key)) > 0, workspace
    assert by_workspace(samples, "watcher_registry_up", **prod) == {"default": 1.0, "team-b": 1.0}
    assert by_workspace(samples, "watcher_registry_tags", **prod) == {"default": 2.0, "team-b": 5.0}
    assert by_workspace(samples, "watcher_registry_repositories", **prod) == {"default": 1.0, "team-b": 2.0}
    assert set(by_workspace(samples, "watcher_registry_last_success_timestamp_seconds", **prod)) == set(keys)
    durations = by_workspace(samples, "watcher_registry_last_poll_duration_seconds", **prod)
    assert durations == {w: pytest.approx(seconds_of(runs_of(watcher, key)[-1])) for w, key in keys.items()}
    # the histogram stays per provider: both workspaces' polls in one series
    assert samples["watcher_poll_duration_seconds_count"] == [({"provider": "oci"}, 4.0)]


def test_counters_stored_before_workspaces_are_defaults(watcher: Watcher, api: Api) -> None:
    """A row counted before workspaces existed (no `workspace`) is `default`'s, and a poll of `default`'s
    registry now adds to that very row: one series, its count continued."""
    with session_scope(watcher.engine) as session:
        counters.add(session, [counters.Increment("watcher_events_total", {"registry": "prod", "change": "added"}, 5)])
        counters.add(session, pollmetrics.committed("prod", ["added"]))
        counters.add(session, pollmetrics.committed("team-b/prod", ["added"]))
    events = scrape(api)["watcher_events_total"]
    assert sorted((labels["workspace"], labels["registry"], value) for labels, value in events) == [
        ("default", "prod", 6.0),
        ("team-b", "prod", 1.0),
    ]


def test_the_schedule_lag_is_one_series_per_workspace(watcher: Watcher, api: Api) -> None:
    """Each workspace's lag is its own most overdue poll's (dispatched, `due_since`, or not yet,
    `next_poll_at`); a workspace with nothing due, or no registry at all, shows 0."""
    for name in ("team-b", "team-c", "empty"):
        add_workspace(watcher, name)
    now = utcnow()
    with session_scope(watcher.engine) as session:
        for workspace in ("default", "team-b", "team-c"):
            registries.save(session, RegistrySpec("prod", "oci", "https://prod.example.com", workspace=workspace))
    set_row(watcher, "prod", next_poll_at=now + timedelta(hours=1))
    set_row(watcher, "team-b/prod", next_poll_at=now - timedelta(seconds=120))
    set_row(watcher, "team-c/prod", next_poll_at=now + timedelta(hours=1), due_since=now - timedelta(seconds=600))

    lags = by_workspace(scrape(api), "watcher_schedule_lag_seconds")
    assert set(lags) == {"default", "team-b", "team-c", "empty"}
    assert lags["default"] == 0.0 and lags["empty"] == 0.0
    assert 120 <= lags["team-b"] < 600 <= lags["team-c"] < 700
    with session_scope(watcher.engine) as session:
        at = utcnow()
        direct = model.schedule_lags(session, at)
        assert direct.keys() == lags.keys() and direct["team-b"] >= lags["team-b"]
        assert model.deployment_lag(session, at) == max(direct.values()) >= 600
