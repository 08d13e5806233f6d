# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""Webhook receivers per workspace: two workspaces each register a real registry named `prod`. Each
receiver's URL names its workspace (`default` keeps the URL it always had), a notification to it re-lists
that workspace's registry only, and is counted apart. Nothing tells a stranger which receivers exist: the
other workspace's URL with this one's secret, an unknown workspace, an unknown name, a receiver turned off
and a wrong secret all get byte-identical 401s, queueing and counting nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import broker, hook_server, payload  # noqa: F401 - fixtures
from tests.support.polls import runs_of
from watcher import schema
from watcher.db import session_scope
from watcher.hooks import stats as hookstats
from watcher.logs import PathSecrets
from watcher.models import Repository
from watcher.read import counters
from watcher.registrations import store
from watcher.registrations.keys import registry_key
from watcher.registrations.spec import RegistrySpec
from watcher.settings import get_settings

V1 = "application/vnd.docker.distribution.events.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TEAM = "team"


@dataclass
class Prod:
    """One workspace's `prod` as `watcher registry webhook prod [--workspace W] --json` showed it."""

    key: str
    url: str
    secret: str


def enable(watcher: Watcher, name: str, *extra: str) -> dict[str, Any]:
    result = watcher.cli("registry", "webhook", name, "--json", *extra)
    assert result.exit_code == 0, result.output
    shown: dict[str, Any] = json.loads(result.output)
    return shown


def notification(repository: str, tag: str = "v1") -> bytes:
    target = {"repository": repository, "tag": tag, "mediaType": MANIFEST}
    return json.dumps({"events": [{"id": "e1", "action": "push", "target": target}]}).encode()


def queued(watcher: Watcher, broker: str) -> list[tuple[str, list[Any]]]:
    """(task, args) of every message waiting on the Celery queue, oldest first."""
    import base64

    messages = [json.loads(m) for m in reversed(watcher.redis.lrange(broker, 0, -1))]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


def counts(watcher: Watcher) -> dict[tuple[str, str], float]:
    """`watcher_webhooks_total` as written, by (the key its `workspace` and `registry` labels name, outcome)."""
    hookstats.flush()
    with session_scope(watcher.engine) as session:
        rows = counters.read_all(session)
    return {
        (registry_key(labels.get("workspace", schema.DEFAULT_WORKSPACE), labels["registry"]), labels["outcome"]): value
        for metric, labels, value in rows
        if metric == hookstats.METRIC
    }


def repositories_of(watcher: Watcher, key: str) -> list[str]:
    """The repositories of the registry `key`'s snapshot: what its listings have stored."""
    with session_scope(watcher.engine) as session:
        registry_id = store.find(session, key).id
        return list(session.scalars(select(Repository.name).where(Repository.registry_id == registry_id)))


def register(watcher: Watcher, workspace: str, name: str, url: str, **options: Any) -> None:
    with session_scope(watcher.engine) as session:
        store.save(session, RegistrySpec(name, "oci", url, options=options, workspace=workspace))


@pytest.fixture
def prods(
    watcher: Watcher, hook_server: ApiServer, broker: str, registry: RegistryEnv, unique_repo: str
) -> Iterator[tuple[httpx.Client, Prod, Prod]]:
    """Workspace `default` and `team` (inserted as `watcher workspace create` would), each with a registry
    `prod` on the one real registry, its receiver on."""
    with session_scope(watcher.engine) as session:
        session.execute(insert(schema.workspaces).values(name=TEAM))
    for workspace in (schema.DEFAULT_WORKSPACE, TEAM):
        register(watcher, workspace, "prod", registry.url, repositories=[f"{unique_repo}/*"])
    default = enable(watcher, "prod")
    team = enable(watcher, "prod", "--workspace", TEAM)
    with httpx.Client(base_url=hook_server.url, timeout=30) as client:
        yield client, Prod("prod", default["url"], default["secret"]), Prod(f"{TEAM}/prod", team["url"], team["secret"])


def post(client: httpx.Client, url: str, secret: str | None, body: bytes = b"{}") -> httpx.Response:
    headers = {"Content-Type": V1} | ({"Authorization": f"Bearer {secret}"} if secret is not None else {})
    return client.post(url, content=body, headers=headers)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_each_url_names_its_workspace_and_relists_only_its_registry(
    watcher: Watcher,
    hook_server: ApiServer,
    broker: str,
    registry: RegistryEnv,
    unique_repo: str,
    prods: tuple[httpx.Client, Prod, Prod],
) -> None:
    from watcher.tasks.jobs import poll_repository_task

    client, default, team = prods
    assert default.url == f"{hook_server.url}/hooks/v1/prod"  # the URL it always had
    assert team.url == f"{hook_server.url}/hooks/v1/workspaces/{TEAM}/prod"
    assert default.secret != team.secret
    app = f"{unique_repo}/app"
    registry.client.push_image(app, "v1")

    for prod, other in ((team, default), (default, team)):
        answer = post(client, prod.url, prod.secret, notification(app))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"outcome": "accepted", "repositories": [app], "queued": 1}
        assert queued(watcher, broker) == [("watcher.poll_repository", [prod.key, app])]
        watcher.redis.delete(broker)
        poll_repository_task.run(prod.key, app)
        assert repositories_of(watcher, prod.key) == [app]
        assert [run.trigger for run in runs_of(watcher, prod.key)] == ["webhook"]
        if prod is team:  # the other `prod` was not listed
            assert repositories_of(watcher, other.key) == [] and runs_of(watcher, other.key) == []

    assert counts(watcher) == {("prod", "accepted"): 1, (f"{TEAM}/prod", "accepted"): 1}


def test_the_default_workspace_is_reachable_by_the_new_form_too(
    watcher: Watcher, broker: str, unique_repo: str, prods: tuple[httpx.Client, Prod, Prod]
) -> None:
    client, default, _ = prods
    app = f"{unique_repo}/app"
    answer = post(client, "/hooks/v1/workspaces/default/prod", default.secret, notification(app))
    assert answer.status_code == 202, answer.text
    assert queued(watcher, broker) == [("watcher.poll_repository", ["prod", app])]


def test_a_default_registry_named_workspaces_keeps_its_path_secret_url(
    watcher: Watcher, hook_server: ApiServer, broker: str, prods: tuple[httpx.Client, Prod, Prod]
) -> None:
    """`/hooks/v1/workspaces/SECRET` is the two-segment URL of the `default` registry `workspaces` (a path
    secret format), never a workspace's; in `team`, a path secret follows `/workspaces/team/NAME/`."""
    client, _, _ = prods
    register(watcher, schema.DEFAULT_WORKSPACE, "workspaces", "https://quay.io")
    register(watcher, TEAM, "hub", "https://quay.io")
    named = enable(watcher, "workspaces", "--format", "quay")
    hub = enable(watcher, "hub", "--format", "quay", "--workspace", TEAM)
    assert named["url"] == f"{hook_server.url}/hooks/v1/workspaces/{named['secret']}"
    assert hub["url"] == f"{hook_server.url}/hooks/v1/workspaces/{TEAM}/hub/{hub['secret']}"
    body = json.dumps(payload("quay-push")).encode()
    for url in (named["url"], f"/hooks/v1/workspaces/default/workspaces/{named['secret']}", hub["url"]):
        answer = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 202, (url, answer.text)
    assert [args[0] for _, args in queued(watcher, broker)] == ["workspaces", f"{TEAM}/hub"]  # coalesced


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_probing_gets_one_401_whatever_is_there(
    watcher: Watcher, broker: str, unique_repo: str, prods: tuple[httpx.Client, Prod, Prod]
) -> None:
    """Every refusal is the same bytes: status, body and headers (all but the date)."""
    client, default, team = prods
    body = notification(f"{unique_repo}/app")
    signed = {"X-Hub-Signature-256": "sha256=" + hmac.new(b"guess", body, hashlib.sha256).hexdigest()}
    wrong = "not-the-secret-" + "x" * 30
    attempts: dict[str, httpx.Response] = {
        "wrong secret": post(client, team.url, wrong, body),
        "no secret": post(client, team.url, None, body),
        "the other workspace's url with this one's secret": post(client, team.url, default.secret, body),
        "this url with the other workspace's secret": post(client, default.url, team.secret, body),
        "unknown workspace": post(client, "/hooks/v1/workspaces/nowhere/prod", team.secret, body),
        "unknown name": post(client, "/hooks/v1/nope", default.secret, body),
        "unknown name in a workspace": post(client, f"/hooks/v1/workspaces/{TEAM}/nope", team.secret, body),
        "a path secret to a header format": post(client, f"{team.url}/{team.secret}", None, body),
        "a path secret to an unknown workspace": post(client, f"/hooks/v1/workspaces/x/prod/{wrong}", None, body),
        "a path secret to an unknown name": post(client, f"/hooks/v1/nope/{wrong}", None, body),
        "a signature to an unknown name": client.post("/hooks/v1/nope", content=body, headers=signed),
        "a signature to a header format": client.post(team.url, content=body, headers=signed),
        "a NUL in the name": post(client, "/hooks/v1/workspaces/%00/prod", team.secret, body),
    }
    assert watcher.cli("registry", "webhook", "prod", "--workspace", TEAM, "--disable").exit_code == 0
    attempts["receiver turned off"] = post(client, team.url, team.secret, body)
    first = attempts["wrong secret"]
    assert first.status_code == 401 and first.json()["error"]["code"] == "unauthorized"
    for what, answer in attempts.items():
        assert answer.status_code == 401, (what, answer.text)
        assert answer.content == first.content, what
        assert _without_date(answer.headers) == _without_date(first.headers), what
    assert team.secret not in first.text and "prod" not in first.text and TEAM not in first.text
    assert queued(watcher, broker) == []
    # counted for the receivers that exist (the one turned off no longer does); the others count nothing
    assert counts(watcher) == {("prod", "unauthorized"): 1, (f"{TEAM}/prod", "unauthorized"): 5}
    assert post(client, default.url, default.secret, body).status_code == 202  # the other one is still on


def _without_date(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((name, value) for name, value in headers.items() if name != "date")


def test_the_cli_acts_in_its_workspace(
    watcher: Watcher, prods: tuple[httpx.Client, Prod, Prod], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--workspace` (on the command or the root group) or WATCHER_WORKSPACE: the same registry; a name
    only another workspace has is one line that names no workspace."""
    _, _, team = prods
    assert enable(watcher, "prod", "--workspace", TEAM)["url"].endswith(f"/hooks/v1/workspaces/{TEAM}/prod")
    shown = watcher.cli("--workspace", TEAM, "registry", "webhook", "prod")
    assert shown.exit_code == 0, shown.output
    assert f"url: {team.url}\nsecret: {team.secret}\n" in shown.output
    assert f'url: "{team.url}"' in shown.output.split("On the registry's side (distribution):\n", 1)[1]
    register(watcher, TEAM, "elsewhere", "https://r.example.com")
    missing = watcher.cli("registry", "webhook", "elsewhere")
    assert missing.exit_code == 1
    assert "no registry named 'elsewhere'" in missing.output and len(missing.output.strip().splitlines()) == 1
    assert TEAM not in missing.output
    monkeypatch.setenv("WATCHER_WORKSPACE", TEAM)
    get_settings.cache_clear()
    assert enable(watcher, "elsewhere")["url"].endswith(f"/hooks/v1/workspaces/{TEAM}/elsewhere")


def test_the_log_shows_no_secret_of_either_form() -> None:
    hidden = PathSecrets()
    for path, shown in (
        ("/hooks/v1/r1/SECRET?x=1", "/hooks/v1/r1/…?x=1"),
        ("/hooks/v1/workspaces/SECRET", "/hooks/v1/workspaces/…"),
        (f"/hooks/v1/workspaces/{TEAM}/prod/SECRET", f"/hooks/v1/workspaces/{TEAM}/prod/…"),
        (f"/hooks/v1/workspaces/{TEAM}/prod/SECRET/more", f"/hooks/v1/workspaces/{TEAM}/prod/…"),
        (f"/hooks/v1/workspaces/{TEAM}/prod", f"/hooks/v1/workspaces/{TEAM}/prod"),
        ("/hooks/v1/r1", "/hooks/v1/r1"),
    ):
        record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '"POST %s HTTP/1.1" 202', (path,), None)
        hidden.filter(record)
        assert record.getMessage() == f'"POST {shown} HTTP/1.1" 202', path


def test_the_set_up_names_the_workspaces_url_and_objects(
    watcher: Watcher, hook_server: ApiServer, prods: tuple[httpx.Client, Prod, Prod]
) -> None:
    """What the set-up creates on the registry's side is named after the key (an EventBridge rule takes no
    `/`), and calls the workspace's URL."""
    ecr = "https://123456789012.dkr.ecr.us-west-2.amazonaws.com"
    credentials = {"access_key": "AKIAX", "secret_key": "s", "region": "us-west-2"}
    with session_scope(watcher.engine) as session:
        store.save(session, RegistrySpec("images", "ecr", ecr, credentials=credentials, workspace=TEAM))
    shown = watcher.cli("registry", "webhook", "images", "--workspace", TEAM, "--format", "ecr-eventbridge")
    assert shown.exit_code == 0, shown.output
    url = f"{hook_server.url}/hooks/v1/workspaces/{TEAM}/images"
    assert f"url: {url}\n" in shown.output
    assert f"--invocation-endpoint {url} " in shown.output
    assert f"--name watcher-{TEAM}--images " in shown.output and f"watcher-{TEAM}/" not in shown.output
