"""`GET /api/v1/registries/{name}/polls`: each poll says its trigger, and a webhook's the repository it listed."""

from __future__ import annotations

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.web.conftest import Api
from watcher.polling import poll as polling
from watcher.polling.repository import poll_repository


def test_the_poll_history_says_what_triggered_each_poll(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    image = f"{unique_repo}/app"
    registry.client.push_image(image, "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    polling.poll("r1", trigger="schedule")
    registry.client.push_image(image, "v2")
    poll_repository("r1", image)
    assert watcher.cli("poll", "r1").exit_code == 0

    page = api.reader.get("/api/v1/registries/r1/polls", params={"limit": 2})
    assert page.status_code == 200, page.text
    body = page.json()
    assert [(p["trigger"], p["listed_repositories"], p["events"]) for p in body["items"]] == [
        ("manual", None, 0),
        ("webhook", [image], 1),
    ]
    older = api.reader.get("/api/v1/registries/r1/polls", params={"cursor": body["next_cursor"]}).json()
    assert [(p["trigger"], p["listed_repositories"]) for p in older["items"]] == [("schedule", None)]

    schema = api.reader.get("/openapi.json").json()["components"]["schemas"]["Poll"]["properties"]
    assert schema["trigger"]["enum"] == ["schedule", "webhook", "manual"]
    shown = api.reader.get("/api/v1/registries/r1").json()
    assert shown["last_poll"]["trigger"] == "manual" and shown["last_webhook_poll"]["listed_repositories"] == [image]
    assert shown["status"]["state"] == "ok"
