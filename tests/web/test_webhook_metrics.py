# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""A webhook's poll of one repository sends requests like any poll: `watcher_registry_requests_total` counts
them, by code, as `/metrics` shows them."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import Hook, broker, hook_server  # noqa: F401 - fixtures
from tests.support.polls import runs_of
from watcher.polling import poll as polling
from watcher.settings import get_settings

V2 = "application/vnd.docker.distribution.events.v2+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
METRICS_TOKEN = "scrape-secret-0123456789"


def requests_by_code(server: ApiServer) -> dict[str, float]:
    with server.client(METRICS_TOKEN) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "watcher_registry_requests_total" and sample.labels["registry"] == "r1"
    }


def test_a_webhooks_poll_counts_its_requests(
    watcher: Watcher,
    hook_server: ApiServer,
    broker: str,
    registry: RegistryEnv,
    unique_repo: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHER_METRICS_TOKEN", METRICS_TOKEN)
    get_settings.cache_clear()
    app = f"{unique_repo}/app"
    registry.client.push_image(app, "v1")
    added = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*")
    assert added.exit_code == 0, added.output
    polling.poll("r1")  # the baseline, registry-wide
    scheduled = requests_by_code(hook_server)
    assert sum(scheduled.values()) == sum(run.requests for run in runs_of(watcher, "r1")) > 0

    with hook_server.client() as client:
        hook = Hook.enable(watcher, broker, client, "distribution")
        digest = registry.client.push_image(app, "v2")
        target = {"repository": app, "tag": "v2", "digest": digest, "mediaType": MANIFEST}
        notice = {"events": [{"id": "e1", "action": "push", "target": target}]}
        answer = hook.post(notice, content_type=V2)
        assert answer.status_code == 202, answer.text
        assert hook.run(app) == 1

    webhook_runs = [run for run in runs_of(watcher, "r1") if run.trigger == "webhook"]
    assert len(webhook_runs) == 1 and webhook_runs[0].requests > 0
    counted = requests_by_code(hook_server)
    assert sum(counted.values()) - sum(scheduled.values()) == webhook_runs[0].requests, (scheduled, counted)
    assert counted["200"] > scheduled["200"]
