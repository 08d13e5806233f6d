# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""Each provider's documented notification (tests/data/webhooks) posted to the real receiver, against a
registry that really changed: the real Distribution registry behind the Harbor and Docker Hub fakes, as
ACR (its username/password mode is the OCI token flow) and as Quay, and moto's ECR. The named repository
is re-listed and only what really changed is emitted; see `tests.support.hooks.story`."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.fakes.dockerhub import FakeDockerHub
from tests.fakes.harbor import FakeHarbor
from tests.pollers.test_ecr import aws_env, ecr, moto  # noqa: F401 - fixtures
from tests.support.api_server import ApiServer
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv, RegistryFactory
from tests.support.hooks import Hook, broker, hook_server, payload, story  # noqa: F401 - fixtures
from tests.support.moto_server import ACCOUNT, REGION, REGISTRY_URL, EcrSeed
from tests.support.registry import RegistryClient
from watcher.pollers.dockerhub import API_URL_ENV
from watcher.polling import poll as polling


@pytest.fixture
def client(hook_server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hook_server.url, timeout=10) as made:
        yield made


def ok(result: Any) -> None:
    assert result.exit_code == 0, result.output


# ---- Harbor: the fake's API over the real registry ------------------------------------------------------------
def harbor_notice(registry_host: str) -> Any:
    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        body = copy.deepcopy(payload("harbor-delete" if action == "delete" else "harbor-push"))
        project, _, name = repository.partition("/")
        body["event_data"]["repository"].update(namespace=project, name=name, repo_full_name=repository)
        body["event_data"]["resources"][0].update(tag=tag, resource_url=f"{registry_host}/{repository}:{tag}")
        return body

    return notice


def test_harbor(
    watcher: Watcher, registry_factory: RegistryFactory, tmp_path: Path, client: httpx.Client, broker: str
) -> None:
    backing = registry_factory()
    with FakeHarbor(backing.url, accounts={"robot$ci": "robot-secret"}) as harbor, RegistryClient(harbor.url) as ci:
        repository = "proj/team/app"
        ci.push_image(repository, "v1")
        (tmp_path / "pw").write_text("robot-secret")
        ok(watcher.add_registry("r1", harbor.url, "--username", "robot$ci", "--password", f"@{tmp_path / 'pw'}"))
        polling.poll("r1")
        hook = Hook.enable(watcher, broker, client, "harbor")
        host = harbor.url.split("://", 1)[1]
        story(
            hook,
            repository,
            lambda tag: ci.push_image(repository, tag),
            harbor_notice(host),
            lambda tag: ci.delete(repository, tag),
        )
        pulled = hook.post(
            payload("harbor-pull") | {"event_data": harbor_notice(host)("push", repository, "v1")["event_data"]}
        )
        elsewhere = hook.post(harbor_notice("harbor.example.com")("push", repository, "v1"))
        for answer in (pulled, elsewhere):
            assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
        assert hook.queued() == []


# ---- Docker Hub: the fake Hub API over the real token registry -------------------------------------------------
def dockerhub_notice(action: str, repository: str, tag: str) -> dict[str, Any]:
    assert action == "push"  # Docker Hub announces pushes only
    body = copy.deepcopy(payload("dockerhub-push"))
    namespace, _, name = repository.partition("/")
    body["push_data"]["tag"] = tag
    body["repository"].update(repo_name=repository, namespace=namespace, name=name, owner=namespace)
    return body


def test_dockerhub(
    watcher: Watcher,
    token_registry: RegistryEnv,
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.Client,
    broker: str,
) -> None:
    namespace = f"org{secrets.token_hex(4)}"
    users = token_registry.token_server.users if token_registry.token_server else {}
    with FakeDockerHub(token_registry.server.storage_dir, users, namespaces={namespace}) as hub:
        monkeypatch.setenv(API_URL_ENV, hub.url)
        repository = f"{namespace}/app"
        push = token_registry.client.push_image
        push(repository, "v1")
        push(f"other{namespace}/app", "v1")  # another namespace's repository, as real as this one
        credentials = ("--username", USERNAME, "--password", PASSWORD, "--namespace", namespace)
        ok(watcher.add_registry("r1", token_registry.url, *credentials, provider="dockerhub"))
        polling.poll("r1")
        hook = Hook.enable(watcher, broker, client, "dockerhub")
        assert hook.path_secret
        story(hook, repository, lambda tag: push(repository, tag), dockerhub_notice, None)
        # a notification naming another namespace is listed as nothing: no event for a repository not watched
        before = hook.changes()
        assert hook.post(dockerhub_notice("push", f"other{namespace}/app", "v1")).status_code == 202
        assert hook.run(f"other{namespace}/app") == 0
        assert hook.changes() == before


# ---- ACR: username and password, the real token registry ------------------------------------------------------
def acr_notice(registry_host: str) -> Any:
    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        body = copy.deepcopy(payload(f"acr-{action}"))
        body["target"]["repository"] = repository
        if action == "push":
            body["target"]["tag"] = tag
        body["request"]["host"] = registry_host
        return body

    return notice


def test_acr(
    watcher: Watcher, token_registry: RegistryEnv, unique_repo: str, client: httpx.Client, broker: str
) -> None:
    push = token_registry.client.push_image
    repository = f"{unique_repo}/app"
    push(repository, "v1")
    credentials = ("--username", USERNAME, "--password", PASSWORD, "--repository", f"{unique_repo}/*")
    ok(watcher.add_registry("r1", token_registry.url, *credentials, provider="acr"))
    polling.poll("r1")
    hook = Hook.enable(watcher, broker, client, "acr")
    notice = acr_notice(token_registry.host)
    story(
        hook,
        repository,
        lambda tag: push(repository, tag),
        notice,
        lambda tag: token_registry.client.delete(repository, tag),
    )
    chart = payload("acr-chart-push") | {"request": notice("push", repository, "v1")["request"]}
    for body in (chart, acr_notice("other.azurecr.io")("push", repository, "v1"), {"action": "ping"}):
        answer = hook.post(body)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
    assert hook.queued() == []


# ---- Quay: the real registry ---------------------------------------------------------------------------------
def quay_notice(registry_host: str) -> Any:
    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        assert action == "push"  # Quay announces pushes only
        namespace, _, name = repository.partition("/")
        return payload("quay-push") | {
            "repository": repository,
            "namespace": namespace,
            "name": name,
            "docker_url": f"{registry_host}/{repository}",
            "updated_tags": [tag],
        }

    return notice


def test_quay(watcher: Watcher, registry: RegistryEnv, unique_repo: str, client: httpx.Client, broker: str) -> None:
    repository = f"{unique_repo}/app"
    registry.client.push_image(repository, "v1")
    ok(watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*"))
    polling.poll("r1")
    hook = Hook.enable(watcher, broker, client, "quay")
    assert hook.path_secret
    notice = quay_notice(registry.host)
    story(hook, repository, lambda tag: registry.client.push_image(repository, tag), notice, None)
    build = payload("quay-build-queued") | {"repository": repository, "docker_url": f"{registry.host}/{repository}"}
    for body in (build, quay_notice("quay.io")("push", repository, "v1")):
        answer = hook.post(body)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
    assert hook.queued() == []


# ---- ECR via EventBridge: moto's ECR -------------------------------------------------------------------------
def ecr_notice(account: str = ACCOUNT, region: str = REGION) -> Any:
    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        body = copy.deepcopy(payload(f"ecr-eventbridge-{action}"))
        body.update(account=account, region=region)
        body["detail"].update({"repository-name": repository, "image-tag": tag})
        return body

    return notice


def test_ecr_eventbridge(watcher: Watcher, ecr: EcrSeed, unique_repo: str, client: httpx.Client, broker: str) -> None:
    repository = f"{unique_repo}/app"
    ecr.create(repository)
    ecr.push(repository, "v1")
    keys = ("--access-key", "AKIAWATCHERTEST00001", "--secret-key", "never-shown", "--repository", f"{unique_repo}/*")
    ok(watcher.add_registry("r1", REGISTRY_URL, *keys, provider="ecr"))
    polling.poll("r1")
    hook = Hook.enable(watcher, broker, client, "ecr-eventbridge")
    story(
        hook,
        repository,
        lambda tag: ecr.push(repository, tag),
        ecr_notice(),
        lambda tag: ecr.delete_tag(repository, tag),
    )
    failed = ecr_notice()("push", repository, "v1")
    failed["detail"]["result"] = "FAILURE"
    scan = payload("ecr-eventbridge-scan") | {"account": ACCOUNT, "region": REGION}
    for body in (
        failed,
        scan,
        ecr_notice(account="210987654321")("push", repository, "v1"),
        ecr_notice(region="eu-west-1")("push", repository, "v1"),
    ):
        answer = hook.post(body)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
    assert hook.queued() == []
