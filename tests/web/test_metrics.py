"""`/metrics` from the deployment's counters and state, in Prometheus's text format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Watcher
from tests.web.conftest import Api
from watcher import counters
from watcher.counters import Increment
from watcher.db import session_scope


def scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = api.anonymous.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def test_counters_add_up_across_transactions_and_show_as_prometheus_metrics(watcher: Watcher, api: Api) -> None:
    labels = {"registry": "r1", "provider": "oci"}
    for seconds in (0.2, 3.0, 700.0):
        with session_scope(watcher.engine) as session:
            counters.add(
                session,
                [
                    Increment("watcher_polls_total", {**labels, "outcome": "ok"}),
                    Increment("watcher_registry_requests_total", {**labels, "code": "200"}, 10),
                    *counters.observation("watcher_poll_duration_seconds", labels, seconds),
                ],
            )
    samples = scrape(api)
    assert samples["watcher_polls_total"] == [({**labels, "outcome": "ok"}, 3.0)]
    assert samples["watcher_registry_requests_total"] == [({**labels, "code": "200"}, 30.0)]
    buckets = {s[0]["le"]: s[1] for s in samples["watcher_poll_duration_seconds_bucket"]}
    assert (buckets["0.5"], buckets["5.0"], buckets["600.0"], buckets["+Inf"]) == (1.0, 2.0, 2.0, 3.0)
    assert samples["watcher_poll_duration_seconds_count"] == [(labels, 3.0)]
    assert samples["watcher_outbox_pending"] == [({}, 0.0)]
    assert samples["watcher_queue_length"] == [({"queue": "celery"}, 0.0)]


def test_a_metrics_token_guards_the_scrape(api: Api, monkeypatch) -> None:
    from watcher.settings import get_settings

    monkeypatch.setenv("WATCHER_METRICS_TOKEN", "scrape-secret-0123456789")
    get_settings.cache_clear()
    assert api.anonymous.get("/metrics").status_code == 401
    allowed = api.anonymous.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123456789"})
    assert allowed.status_code == 200 and "watcher_outbox_pending" in allowed.text
