"""Registering, changing, testing, polling and removing registries over HTTP, against the real registry."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv
from tests.support.registry import free_port
from tests.web.conftest import Api
from tests.web.test_read_api import error_of
from watcher.models import Registry


def entry(env: RegistryEnv, scope: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "r1",
        "provider": "oci",
        "url": env.url,
        "username": USERNAME,
        "password": PASSWORD,
        "repositories": [f"{scope}/*"],
        "interval": "1h",
        **extra,
    }


def registered(watcher: Watcher) -> int:
    with watcher.engine.connect() as conn:
        return int(conn.scalar(select(func.count(Registry.id))) or 0)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_register_poll_change_and_remove_through_the_api(
    watcher: Watcher, api: Api, basic_registry: RegistryEnv, unique_repo: str
) -> None:
    digest = basic_registry.client.push_image(f"{unique_repo}/app", "v1")
    wrong = api.admin.post("/api/v1/registries", json=entry(basic_registry, unique_repo, password="wrong-pass"))
    refused = error_of(wrong, 502, "credentials_refused")
    assert refused["field"] == "password" and "wrong-pass" not in wrong.text
    assert registered(watcher) == 0

    created = api.admin.post("/api/v1/registries", json=entry(basic_registry, unique_repo))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["credentials"] == {"password": "set", "username": USERNAME} and PASSWORD not in created.text
    assert body["status"]["state"] == "pending" and body["interval"] == "1h"
    error_of(api.admin.post("/api/v1/registries", json=entry(basic_registry, unique_repo)), 409, "conflict")

    assert watcher.cli("poll", "r1").exit_code == 0
    tags = api.reader.get(f"/api/v1/registries/r1/repositories/{unique_repo}/app/tags").json()["items"]
    assert [(t["tag"], t["digest"]) for t in tags] == [("v1", digest)]

    changed = api.admin.patch("/api/v1/registries/r1", json={"interval": "2h", "include_tags": "^v"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["interval"] == "2h" and changed.json()["options"]["include_tags"] == "^v"
    assert watcher.cli("poll", "r1").exit_code == 0  # the password left out of the change was kept
    assert api.admin.post("/api/v1/registries/r1/test").json() == {"ok": True}
    error_of(api.admin.patch("/api/v1/registries/r1", json={"name": "r2"}), 422, "invalid")
    bad = api.admin.patch("/api/v1/registries/r1", json={"password": "nope"})
    assert error_of(bad, 502, "credentials_refused")["field"] == "password"
    assert watcher.cli("poll", "r1").exit_code == 0  # a refused change saved nothing

    assert api.admin.delete("/api/v1/registries/r1").status_code == 204
    error_of(api.reader.get("/api/v1/registries/r1"), 404, "not_found")
    assert registered(watcher) == 0


def test_validate_tests_without_saving_and_speaks_like_registry_apply(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    good = {"name": "r1", "provider": "oci", "url": registry.url, "repositories": [f"{unique_repo}/*"]}
    assert api.admin.post("/api/v1/registries/validate", json=good).json() == {"ok": True}
    assert registered(watcher) == 0
    unreachable = {**good, "url": f"http://127.0.0.1:{free_port()}"}
    assert (
        error_of(api.admin.post("/api/v1/registries/validate", json=unreachable), 502, "unreachable")["field"] == "url"
    )
    for body, needle in (
        ({**good, "emit_existing": "false"}, "emit_existing"),
        ({**good, "interval": "40d"}, "--interval"),
        ({**good, "colour": "blue"}, "colour"),
        ({**good, "url": "https://user:pw@example.com"}, "--username"),
        ({**good, "include_tags": "(?=x)"}, "--include-tags"),
        ({**good, "max_concurrency": "1e400"}, "max_concurrency"),
    ):
        raw = json.dumps(body).replace('"1e400"', "1e400")  # a number JSON can carry and a float cannot
        response = api.admin.post("/api/v1/registries/validate", content=raw.encode())
        assert needle in error_of(response, 422, "invalid")["message"], response.text
        assert "pw@" not in response.text
    error_of(api.admin.post("/api/v1/registries", content=b"{not json"), 400, "malformed")
    error_of(api.admin.post("/api/v1/registries", content=b'{"name": NaN}'), 400, "malformed")
    error_of(api.admin.post("/api/v1/registries", json=[good]), 422, "invalid")
    assert registered(watcher) == 0


def test_a_remote_registration_reads_no_local_file_and_no_environment(
    watcher: Watcher, api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`@PATH` and `${VAR}` are the command line's and the operator's file's: from a request they are text."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("what-the-file-holds")
    monkeypatch.setenv("WATCHER_TEST_SECRET", "what-the-environment-holds")
    literal = f"@{secret_file}"
    with Recorder() as recorder, HostileRegistry(recorder, username="team", password=literal) as server:
        body = {"name": "r1", "provider": "oci", "url": server.url, "username": "team", "password": literal}
        assert api.admin.post("/api/v1/registries", json=body).status_code == 201  # the literal was sent
        with_env = {**body, "name": "r2", "password": "${WATCHER_TEST_SECRET}"}
        refused = api.admin.post("/api/v1/registries", json=with_env)
        assert error_of(refused, 502, "credentials_refused")["field"] == "password"
    assert "what-the" not in refused.text


def test_poll_now_queues_the_task_beat_uses(watcher: Watcher, api: Api) -> None:
    from watcher.tasks import app

    prefix = app.conf.broker_transport_options["global_keyprefix"]  # fixed when the app was first imported
    watcher.redis.delete(f"{prefix}celery")  # what earlier tests of this process queued there
    assert watcher.add_registry("r1", "https://r1.example.com", "--no-verify").exit_code == 0
    queued = api.admin.post("/api/v1/registries/r1/poll")
    assert queued.status_code == 202 and queued.json()["poll_id"]
    waiting = [json.loads(m) for m in watcher.redis.lrange(f"{prefix}celery", 0, -1)]
    watcher.redis.delete(f"{prefix}celery")
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in waiting] == [("watcher.poll", "('r1',)")]
    error_of(api.admin.post("/api/v1/registries/nope/poll"), 404, "not_found")


def test_no_response_shows_a_registered_secret(watcher: Watcher, api: Api, registry: RegistryEnv) -> None:
    secret = "a-very-secret-value-0123456789"
    for name, extra in (("r1", {"password": secret, "username": "u"}), ("r2", {})):
        body = {"name": name, "provider": "oci", "url": registry.url, **extra}
        assert api.admin.post("/api/v1/registries?verify=false", json=body).status_code == 201
    document = api.reader.get("/openapi.json").json()
    seen: list[httpx.Response] = []
    for path, operations in document["paths"].items():
        if "get" in operations and "{repository}" not in path and not path.endswith("/stream"):
            seen.append(api.admin.get(path.replace("{name}", "r1")))
    seen.append(api.admin.post("/api/v1/registries/r1/test"))  # the registry refuses: the error is shown
    seen.append(api.admin.patch("/api/v1/registries/r1?verify=false", json={"interval": "2h"}))
    assert len(seen) >= 8
    for response in seen:
        assert secret not in response.text, response.request.url


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # keyset paging on both databases: tests/read
def test_tag_pages_stay_whole_while_pushes_land_between_them(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    repository = f"{unique_repo}/big"
    registry.client.push_image(repository, "seed")
    manifest, media_type, _ = registry.client.get_manifest(repository, "seed")
    with ThreadPoolExecutor(4) as pool:
        tags = (f"t{n:04}" for n in range(0, 218, 2))  # 11 pages of 10: pushes land before and after the reader
        list(pool.map(lambda tag: registry.client.put_manifest(repository, tag, manifest, media_type), tags))
    assert watcher.add_registry("r1", registry.url, "--repository", repository).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    before = {f"t{n:04}" for n in range(0, 218, 2)} | {"seed"}
    assert len(before) == 110

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    started = time.monotonic()
    while True:
        # pages of 10 page as pages of 100 do (the same keyset), over a tenth of the tags to push and poll
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = api.reader.get(f"/api/v1/registries/r1/repositories/{repository}/tags", params=params).json()
        seen.extend(t["tag"] for t in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        pages += 1
        if pages in (3, 9):  # new tags land between pages: before and after the reader's position
            for tag in (f"t{pages * 4 - 3:04}", f"t{pages * 40 + 1:04}"):
                registry.client.put_manifest(repository, tag, manifest, media_type)
            assert watcher.cli("poll", "r1").exit_code == 0
    assert len(seen) == len(set(seen)), "a tag appeared on two pages"
    assert before <= set(seen), f"missing: {sorted(before - set(seen))[:5]}"
    assert time.monotonic() - started < 120
