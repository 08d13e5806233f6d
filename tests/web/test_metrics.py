"""`/metrics` from the deployment's counters and state, in Prometheus's text format."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.polls import runs_of, set_row
from tests.web.conftest import Api
from watcher.db import session_scope
from watcher.models import PollRun, utcnow
from watcher.polling.repository import poll_repository
from watcher.polling.scheduler import claim_due
from watcher.read import counters
from watcher.read.counters import Increment
from watcher.registrations import store as registries
from watcher.registrations.spec import RegistrySpec

#: the scrapes here authenticate as Prometheus would: with the metrics token (tests/web/test_metrics_access.py
#: tries every way in and out)
METRICS_TOKEN = "scrape-secret-0123456789"


@pytest.fixture(autouse=True)
def metrics_token(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    from watcher.settings import get_settings

    monkeypatch.setenv("WATCHER_METRICS_TOKEN", METRICS_TOKEN)
    get_settings.cache_clear()


def scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = api.anonymous.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def test_counters_add_up_across_transactions_and_show_as_prometheus_metrics(watcher: Watcher, api: Api) -> None:
    labels = {"workspace": "default", "registry": "r1", "provider": "oci"}
    for seconds in (0.2, 3.0, 700.0):
        with session_scope(watcher.engine) as session:
            counters.add(
                session,
                [
                    Increment("watcher_polls_total", {**labels, "outcome": "ok"}),
                    Increment("watcher_registry_requests_total", {**labels, "code": "200"}, 10),
                    *counters.observation("watcher_poll_duration_seconds", {"provider": "oci"}, seconds),
                ],
            )
    samples = scrape(api)
    assert samples["watcher_polls_total"] == [({**labels, "outcome": "ok"}, 3.0)]
    assert samples["watcher_registry_requests_total"] == [({**labels, "code": "200"}, 30.0)]
    buckets = {s[0]["le"]: s[1] for s in samples["watcher_poll_duration_seconds_bucket"]}
    assert (buckets["0.5"], buckets["5.0"], buckets["600.0"], buckets["+Inf"]) == (1.0, 2.0, 2.0, 3.0)
    assert samples["watcher_poll_duration_seconds_count"] == [({"provider": "oci"}, 3.0)]
    assert samples["watcher_poll_duration_seconds_sum"] == [({"provider": "oci"}, 703.2)]
    assert samples["watcher_outbox_pending"] == [({}, 0.0)]
    assert samples["watcher_queue_length"] == [({"queue": "celery"}, 0.0)]


def test_per_registry_duration_rows_are_added_into_their_providers_series(watcher: Watcher, api: Api) -> None:
    """Rows of the per-registry histogram (from before migration 0009, or from a worker not yet upgraded
    during a rolling deploy) are summed into the provider's series: the scrape neither breaks nor shows a
    `registry` label on the histogram."""
    observations = [({"registry": "r1", "provider": "oci"}, 0.2), ({"registry": "r2", "provider": "oci"}, 3.0)]
    observations += [({"provider": "oci"}, 20.0), ({"registry": "r3", "provider": "ecr"}, 1.0)]
    with session_scope(watcher.engine) as session:
        for labels, seconds in observations:
            counters.add(session, counters.observation("watcher_poll_duration_seconds", labels, seconds))
    samples = scrape(api)
    names = ("watcher_poll_duration_seconds_bucket", "watcher_poll_duration_seconds_count")
    assert all("registry" not in labels for name in names for labels, _ in samples[name])
    assert dict((s[0]["provider"], s[1]) for s in samples["watcher_poll_duration_seconds_count"]) == {
        "oci": 3.0,
        "ecr": 1.0,
    }
    oci = {s[0]["le"]: s[1] for s in samples["watcher_poll_duration_seconds_bucket"] if s[0]["provider"] == "oci"}
    assert (oci["0.5"], oci["5.0"], oci["10.0"], oci["30.0"], oci["+Inf"]) == (1.0, 2.0, 2.0, 3.0, 3.0)
    assert value(samples, "watcher_poll_duration_seconds_sum", provider="oci") == pytest.approx(23.2)


def add_run(watcher: Watcher, registry_id: int, outcome: str, seconds: float, **columns: object) -> None:
    started = utcnow() - timedelta(minutes=5)
    with session_scope(watcher.engine) as session:
        finished = started + timedelta(seconds=seconds)
        session.add(
            PollRun(registry_id=registry_id, started_at=started, finished_at=finished, outcome=outcome, **columns)
        )


def test_the_last_poll_duration_is_the_last_registry_wide_polls_that_ended(watcher: Watcher, api: Api) -> None:
    """`watcher_registry_last_poll_duration_seconds`: the newest registry-wide run that ended `ok` or
    `failed`; a webhook's poll of one repository, an abandoned run and a run still going leave it as it is;
    a registry never polled has no sample."""
    with session_scope(watcher.engine) as session:
        ids = {n: registries.save(session, RegistrySpec(n, "oci", f"https://{n}.example.com"))[0].id for n in "ab"}

    def last(name: str) -> list[float]:
        gauge = scrape(api).get("watcher_registry_last_poll_duration_seconds", [])
        return [v for labels, v in gauge if labels == {"workspace": "default", "registry": name}]

    assert last("a") == [] and last("b") == []
    add_run(watcher, ids["a"], "ok", 2.5)
    assert last("a") == [pytest.approx(2.5)]
    add_run(watcher, ids["a"], "ok", 9.0, trigger="webhook", listed_repositories=["team/app"])
    add_run(watcher, ids["a"], "abandoned", 600.0)
    add_run(watcher, ids["a"], "running", 0.0)
    assert last("a") == [pytest.approx(2.5)]
    add_run(watcher, ids["a"], "failed", 0.75)
    assert last("a") == [pytest.approx(0.75)] and last("b") == []


def poll_elsewhere(watcher: Watcher, name: str) -> None:
    """`watcher poll NAME` in a process of its own: it polls, commits and relays, as any worker would."""
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "poll", name],
        env=watcher.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def seconds_of(run: PollRun) -> float:
    assert run.finished_at is not None and run.listed_repositories is None  # a registry-wide poll that ended
    return (run.finished_at - run.started_at).total_seconds()


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for sample_labels, v in samples.get(name, []) if labels.items() <= sample_labels.items())


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_polls_in_another_process_show_in_this_ones_metrics(
    watcher: Watcher, api: Api, token_registry: RegistryEnv, unique_repo: str
) -> None:
    token_registry.client.push_image(f"{unique_repo}/app", "v1")
    added = watcher.add_registry(
        "r1",
        token_registry.url,
        "--username",
        "alice",
        "--password",
        "s3cret-pass",
        "--repository",
        f"{unique_repo}/*",
        "--interval",
        "1h",
    )
    assert added.exit_code == 0, added.output
    assert scrape(api)["watcher_schedule_lag_seconds"][0][1] > 0  # registered: due at once, not polled yet
    poll_elsewhere(watcher, "r1")  # the baseline
    token_registry.client.push_image(f"{unique_repo}/app", "v2")
    token_registry.client.push_image(f"{unique_repo}/app", "v1", seed="moved")
    token_registry.client.push_image(f"{unique_repo}/db", "v1")
    poll_elsewhere(watcher, "r1")

    samples = scrape(api)
    r1 = {"workspace": "default", "registry": "r1"}
    mine = {**r1, "provider": "oci"}
    assert samples["watcher_polls_total"] == [({**mine, "outcome": "ok"}, 2.0)]
    assert samples["watcher_poll_duration_seconds_count"] == [({"provider": "oci"}, 2.0)]  # no `registry` label
    assert value(samples, "watcher_poll_duration_seconds_bucket", provider="oci", le="+Inf") == 2.0
    took = seconds_of(runs_of(watcher, "r1")[-1])
    assert samples["watcher_registry_last_poll_duration_seconds"] == [(r1, pytest.approx(took))]
    assert {s[0]["change"]: s[1] for s in samples["watcher_events_total"]} == {"added": 2, "updated": 1}
    codes = {s[0]["code"]: s[1] for s in samples["watcher_registry_requests_total"] if s[0]["registry"] == "r1"}
    assert codes.get("200", 0) > 0 and codes.get("401", 0) > 0, codes  # the token registry's challenges count
    assert sum(codes.values()) == sum(run.requests for run in runs_of(watcher, "r1"))
    assert value(samples, "watcher_registry_up", registry="r1") == 1.0
    assert value(samples, "watcher_registry_tags", registry="r1") == 3.0
    assert value(samples, "watcher_registry_repositories", registry="r1") == 2.0
    assert value(samples, "watcher_registry_last_success_timestamp_seconds", registry="r1") > time.time() - 300
    assert samples["watcher_outbox_pending"] == [({}, 0.0)]  # `watcher poll` relayed what it found
    assert [e["change"] for e in watcher.stream_entries()].count("added") == 2

    # the tick dispatches a slot 30 s late and no worker takes it yet: that is lag, until a poll starts
    set_row(watcher, "r1", next_poll_at=utcnow() - timedelta(seconds=30))
    assert claim_due(watcher.engine, utcnow()) == ["r1"]
    assert scrape(api)["watcher_schedule_lag_seconds"][0][1] >= 30
    poll_elsewhere(watcher, "r1")
    samples = scrape(api)
    assert samples["watcher_schedule_lag_seconds"] == [({"workspace": "default"}, 0.0)]
    assert samples["watcher_polls_total"] == [({**mine, "outcome": "ok"}, 3.0)]
    took = seconds_of(runs_of(watcher, "r1")[-1])
    assert samples["watcher_registry_last_poll_duration_seconds"] == [(r1, pytest.approx(took))]

    poll_repository("r1", f"{unique_repo}/app")  # a webhook's poll of one repository is not the registry's
    assert runs_of(watcher, "r1")[-1].listed_repositories == [f"{unique_repo}/app"]
    samples = scrape(api)
    assert samples["watcher_registry_last_poll_duration_seconds"] == [(r1, pytest.approx(took))]
    assert samples["watcher_poll_duration_seconds_count"] == [({"provider": "oci"}, 3.0)]
