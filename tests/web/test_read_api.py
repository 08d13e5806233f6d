"""The read side of the API over HTTP, on the real state database, Redis and registry."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.images import ensure_images
from tests.web.conftest import Api
from watcher.registrations.spec import RegistrySpec


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return dict(body["error"])


def poll(watcher: Watcher, name: str = "r1") -> None:
    result = watcher.cli("poll", name)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_registries_repositories_tags_and_events_through_http(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    v1 = registry.client.push_image(f"{unique_repo}/app", "v1")
    registry.client.push_image(f"{unique_repo}/api", "1.0")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    poll(watcher)
    v2 = registry.client.push_image(f"{unique_repo}/app", "v2")
    poll(watcher)

    listed = api.reader.get("/api/v1/registries").json()["items"]
    assert [(r["name"], r["status"]["state"], r["status"]["tags"]) for r in listed] == [("r1", "ok", 3)]
    one = api.reader.get("/api/v1/registries/r1").json()
    assert one["url"] == registry.url and one["status"]["repositories"] == 2

    repos = api.reader.get("/api/v1/registries/r1/repositories").json()
    assert [(r["name"], r["tags"]) for r in repos["items"]] == [(f"{unique_repo}/api", 1), (f"{unique_repo}/app", 2)]
    assert repos["next_cursor"] is None
    tags = api.reader.get(f"/api/v1/registries/r1/repositories/{unique_repo}/app/tags").json()["items"]
    assert [(t["tag"], t["digest"]) for t in tags] == [("v1", v1), ("v2", v2)]
    assert tags[0]["image"] == f"{registry.host}/{unique_repo}/app:v1"
    assert tags[0]["reference"] == f"{registry.host}/{unique_repo}/app@{v1}"
    # v2, pushed after the baseline, was read before its event; v1 (of the baseline) waits for the fill
    assert [(t["created"], t["platforms"], t["annotations"]) for t in tags] == [
        (None, None, None),
        ("1970-01-01T00:00:00.000Z", ["linux/amd64"], {}),
    ]
    assert tags[0]["size"] is None and tags[1]["size"] > 0

    # Once the watcher has read what v1 is, its tag says so too.
    spec = RegistrySpec("r1", "oci", registry.url)
    assert ensure_images(watcher.engine, spec, {v1: f"{unique_repo}/app"}).stored == [v1]
    newest = api.reader.get(f"/api/v1/registries/r1/repositories/{unique_repo}/app/tags?order=created&limit=1").json()
    rest = api.reader.get(
        f"/api/v1/registries/r1/repositories/{unique_repo}/app/tags",
        params={"order": "created", "cursor": newest["next_cursor"]},
    ).json()
    assert [t["tag"] for t in newest["items"] + rest["items"]] == ["v2", "v1"] and rest["next_cursor"] is None
    read = rest["items"][0]  # 1970 (the test image's config) for both: the greater name first
    assert (read["created"], read["platforms"], read["annotations"]) == (
        "1970-01-01T00:00:00.000Z",
        ["linux/amd64"],
        {},
    )
    assert read["size"] > 0
    error_of(api.reader.get(f"/api/v1/registries/r1/repositories/{unique_repo}/app/tags?order=size"), 422, "invalid")

    events = api.reader.get("/api/v1/events", params={"registry": "r1"}).json()
    assert [(e["change"], e["tag"], e["digest"]) for e in events["items"]] == [("added", "v2", v2)]
    assert isinstance(events["items"][0]["id"], int) and json.loads(events["items"][0]["cloudevent"])["id"]
    polls = api.reader.get("/api/v1/registries/r1/polls").json()["items"]
    assert [p["outcome"] for p in polls] == ["ok", "ok"] and polls[0]["events"] == 1


def test_every_route_needs_a_token_and_readers_only_read(api: Api) -> None:
    document = api.anonymous.get("/openapi.json").json()
    open_paths = {"/healthz", "/readyz"}  # /metrics too needs a token (tests/web/test_metrics_access.py)
    # each registry's webhook secret instead (tests/web/test_webhooks.py, test_webhook_path_secret.py)
    open_paths |= {"/hooks/v1/{registry}", "/hooks/v1/{registry}/{secret}"}
    open_paths |= {
        "/hooks/v1/workspaces/{workspace}/{registry}",
        "/hooks/v1/workspaces/{workspace}/{registry}/{secret}",
    }
    checked = 0
    for path, operations in document["paths"].items():
        concrete = path.replace("{name}", "r1").replace("{repository}", "team/app")
        for method in operations:
            if path in open_paths:
                continue
            response = api.anonymous.request(method.upper(), concrete)
            error_of(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
            revoked = api.anonymous.request(method.upper(), concrete, headers={"Authorization": "Bearer wt_forged"})
            error_of(revoked, 401, "unauthorized")
            if method.upper() not in ("GET", "HEAD"):
                error_of(api.reader.request(method.upper(), concrete, json={}), 403, "forbidden")
            checked += 1
    assert checked >= 6


def test_errors_have_one_shape_and_the_right_status(watcher: Watcher, api: Api) -> None:
    assert watcher.add_registry("r1", "https://r1.example.com", "--no-verify").exit_code == 0
    error_of(api.reader.get("/api/v1/registries/nope"), 404, "not_found")
    error_of(api.reader.get("/api/v1/registries/nope/repositories"), 404, "not_found")
    assert "cursor" in error_of(api.reader.get("/api/v1/events", params={"cursor": "junk"}), 422, "invalid")["message"]
    assert error_of(api.reader.get("/api/v1/events", params={"limit": 1001}), 422, "invalid")["field"] == "limit"
    error_of(api.reader.get("/api/v1/events", params={"change": "exploded"}), 422, "invalid")
    error_of(api.reader.get("/api/v1/registries/r1/repositories/a/%2e%2e/%2e%2e/etc/tags"), 400, "bad_request")
    error_of(api.reader.get("/api/v1/registries/r1/repositories/a%00b/tags"), 400, "bad_request")
    error_of(api.reader.get("/api/v1/no-such-route"), 404, "not_found")
    big = api.admin.post("/api/v1/registries", content=b"x" * (2 * 1024 * 1024))
    error_of(big, 413, "too_large")


def test_health_and_readiness(api: Api) -> None:
    assert api.anonymous.get("/healthz").json() == {"status": "ok"}
    ready = api.anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def read_sse(url: str, headers: dict[str, str], want: int, out: list[dict[str, Any]], ready: threading.Event) -> None:
    with httpx.Client(timeout=20) as client, client.stream("GET", url, headers=headers) as response:
        ready.set()
        for line in response.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line.removeprefix("data: ")))
                if len(out) >= want:
                    return


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_the_live_stream_delivers_new_events_and_resumes_from_last_event_id(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    poll(watcher)
    url = f"{api.server.url}/api/v1/events/stream"
    auth = {"Authorization": f"Bearer {api.reader_token}"}
    live: list[dict[str, Any]] = []
    ready = threading.Event()
    reader = threading.Thread(target=read_sse, args=(url, auth, 2, live, ready), daemon=True)
    reader.start()
    assert ready.wait(10)
    time.sleep(0.5)  # the feed starts at the newest event once the client is connected
    registry.client.push_image(f"{unique_repo}/app", "v2")
    registry.client.push_image(f"{unique_repo}/app", "v3")
    poll(watcher)
    reader.join(15)
    assert [e["tag"] for e in live] == ["v2", "v3"]

    registry.client.push_image(f"{unique_repo}/app", "v4")
    poll(watcher)  # happens while no one listens: a client resuming after v2 replays v3 and v4
    resumed: list[dict[str, Any]] = []
    again = threading.Event()
    read_sse(url, {**auth, "Last-Event-ID": str(live[0]["id"])}, 2, resumed, again)
    assert [e["tag"] for e in resumed] == ["v3", "v4"]
    assert [e["id"] for e in resumed] == sorted(e["id"] for e in resumed)
