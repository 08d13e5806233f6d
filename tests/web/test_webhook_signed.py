# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""The `github` and `cloudevents` receivers (bodies signed with `X-Hub-Signature-256`) against the real
registry, registered as `oci`: a signed notification of a real push re-lists the repository and the true
event reaches the stream; a replay or a forged tag emits nothing new; a bad signature is 401 and polls
nothing; a body that is not the format is 400 (`tests.support.hooks.story`); anything else GitHub or a CI
system sends is ignored."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import Notice, broker, hook_server, payload, story  # noqa: F401 - fixtures
from tests.support.webhooks import SignedHook, signature
from watcher.polling import poll as polling

NOWHERE = "sha256:" + "0" * 64
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture
def client(hook_server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hook_server.url, timeout=10) as made:
        yield made


# ---- the payloads, with the names really pushed -----------------------------------------------------
def github(event: str, repository: str, tag: str, digest: str = NOWHERE, action: str = "published") -> dict[str, Any]:
    """GitHub's `package` / `registry_package` payload for ghcr.io/REPOSITORY:TAG (the owner as GitHub
    spells it, capitals included)."""
    body = copy.deepcopy(payload(f"github-{event}-published"))
    owner, _, name = repository.partition("/")
    package = body[event]
    package["owner"]["login"] = package["namespace"] = owner.upper()
    package["name"] = name
    version = package["package_version"]
    version["name"] = version["version"] = digest
    version["container_metadata"]["tag"] = {"name": tag, "digest": digest}
    version["package_url"] = f"ghcr.io/{repository}:{tag}"
    body["action"] = action
    return body


def cloudevent(host: str, repository: str, tag: str, digest: str = NOWHERE, kind: str = "published") -> dict[str, Any]:
    """The sample CloudEvent, its CDEvent naming HOST/REPOSITORY@DIGEST as the watcher's own events do."""
    event = copy.deepcopy(payload("cloudevents-artifact-published"))
    name = repository.rsplit("/", 1)[-1]
    version = "0.2.0" if kind == "deleted" else "0.3.0"
    event["type"] = event["data"]["context"]["type"] = f"dev.cdevents.artifact.{kind}.{version}"
    event["data"]["subject"]["id"] = (
        f"pkg:oci/{name}@{digest.replace(':', '%3A')}?repository_url={host}/{repository}&tag={tag}"
    )
    return event


def github_notice(event: str, digests: dict[str, str]) -> Notice:
    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        published = "deleted" if action == "delete" else "published"
        return github(event, repository, tag, digests.get(tag, NOWHERE), published)

    return notice


def cdevent_notice(host: str, digests: dict[str, str]) -> Notice:
    """Binary mode: the body is the CDEvent itself (`story` posts application/json)."""

    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        kind = "deleted" if action == "delete" else "published"
        data: dict[str, Any] = cloudevent(host, repository, tag, digests.get(tag, NOWHERE), kind)["data"]
        return data

    return notice


# ---- a real push ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["github-package", "github-registry_package", "cloudevents"])
def test_a_notification_of_a_real_push(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, client: httpx.Client, broker: str, flavour: str
) -> None:
    hook_format, _, event = flavour.partition("-")
    repository = f"{unique_repo}/app"
    registry.client.push_image(repository, "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    polling.poll("r1")
    hook = SignedHook.enable(watcher, broker, client, hook_format)
    digests: dict[str, str] = {}
    story(
        hook,
        repository,
        lambda tag: digests.setdefault(tag, registry.client.push_image(repository, tag)),
        github_notice(event, digests) if event else cdevent_notice(registry.host, digests),
        lambda tag: registry.client.delete(repository, tag),
    )


# ---- each answer ------------------------------------------------------------------------------------------
@pytest.fixture(params=["github", "cloudevents"])
def hook(
    request: pytest.FixtureRequest, watcher: Watcher, registry: RegistryEnv, client: httpx.Client, broker: str
) -> SignedHook:
    """Registry r1 (oci, the real registry, watching team/*) with its receiver on in each signed format."""
    assert watcher.add_registry("r1", registry.url, "--repository", "team/*", "--no-verify").exit_code == 0
    return SignedHook.enable(watcher, broker, client, request.param)


def test_structured_batched_and_binary_cloudevents_are_read(
    watcher: Watcher, registry: RegistryEnv, client: httpx.Client, broker: str
) -> None:
    assert watcher.add_registry("r1", registry.url, "--repository", "team/*", "--no-verify").exit_code == 0
    hook = SignedHook.enable(watcher, broker, client, "cloudevents")
    ours = cloudevent(registry.host, "team/app", "v1")
    batch = [cloudevent("ghcr.io", "team/web", "v1"), ours, cloudevent(registry.host, "team/web", "v1")]
    for body, content_type, repositories in (
        (ours, STRUCTURED, ["team/app"]),
        (batch, BATCH, ["team/app", "team/web"]),
        (ours["data"], "application/json", ["team/app"]),
        (ours, f"{STRUCTURED}; charset=utf-8", ["team/app"]),
    ):
        answer = hook.post(body, content_type=content_type)
        assert answer.status_code == 202 and answer.json()["repositories"] == repositories, answer.text


def ignored(hook_format: str, host: str) -> list[tuple[dict[str, Any], str]]:
    """Signed notifications that name no container image of the registry."""
    if hook_format == "github":
        npm = github("package", "team/app", "v1")
        npm["package"]["package_type"] = npm["package"]["ecosystem"] = "npm"
        push_event = {"ref": "refs/heads/main", "repository": payload("github-ping")["repository"]}
        bodies = [
            payload("github-ping"),
            npm,
            push_event,
            github("package", "team/app", "v1", action="in_progress"),
            github("registry_package", "elsewhere/app", "v1"),  # out of --repository scope
        ]
        return [(body, "application/json") for body in bodies]
    pipeline, golang, no_location = (cloudevent(host, "team/app", "v1") for _ in range(3))
    pipeline["type"] = pipeline["data"]["context"]["type"] = "dev.cdevents.pipelinerun.finished.0.2.0"
    golang["data"]["subject"]["id"] = "pkg:golang/example.com/team/app@v1.0.0"
    no_location["data"]["subject"]["id"] = f"pkg:oci/app@{NOWHERE}?tag=v1"
    events = [
        pipeline,
        golang,
        no_location,
        {"specversion": "1.0", "id": "1", "source": "/github", "type": "com.github.push", "data": {}},
        cloudevent("registry.example.com", "team/app", "v1"),
        cloudevent(host, "elsewhere/app", "v1"),  # out of --repository scope
    ]
    return [(event, STRUCTURED) for event in events]


def test_signed_events_about_anything_else_are_ignored(hook: SignedHook, registry: RegistryEnv) -> None:
    bodies = ignored(hook.format, registry.host)
    for body, content_type in bodies:
        answer = hook.post(body, content_type=content_type)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", (body, answer.text)
    assert hook.queued() == []
    assert hook.counts() == {"ignored": len(bodies)}


def test_a_signature_of_anything_else_is_401(hook: SignedHook, caplog: pytest.LogCaptureFixture) -> None:
    body = github("package", "team/app", "v1") if hook.format == "github" else cloudevent("h", "team/app", "v1")
    content = httpx.Request("POST", "/", json=body).content
    for header in (
        signature(content + b" ", hook.secret),  # another body's
        signature(content, hook.secret).replace("sha256=", "sha1="),
        "",
    ):
        answer = hook.post(content, header=header)
        assert answer.status_code == 401, (header, answer.text)
    path_secret = hook.client.post(
        f"{hook.url}/{hook.secret}", content=content, headers={"X-Hub-Signature-256": signature(content, hook.secret)}
    )
    assert path_secret.status_code == 401  # these formats sign: a secret in the URL is not theirs
    assert hook.queued() == []
    assert hook.counts() == {"unauthorized": 4}
    assert hook.secret not in caplog.text


MALFORMED = {
    "github": [
        (b'{"action": "published", "package": "ghcr.io/team/app"}', "application/json"),
        (b'{"package": {"package_type": "CONTAINER"}}', "application/json"),
        (b'{"action": "published", "package": {"package_type": "CONTAINER", "name": "app"}}', "application/json"),
        (b'{"action": "published", "package": {}}', "application/x-www-form-urlencoded"),
    ],
    "cloudevents": [
        (b"{}", STRUCTURED),
        (b'{"type": "dev.cdevents.artifact.published.0.3.0", "data": "x"}', STRUCTURED),
        (b"{}", BATCH),
        (b'{"context": {"type": "dev.cdevents.artifact.published.0.3.0"}, "subject": {}}', "application/json"),
        (b"{}", "text/plain"),
    ],
}


def test_a_signed_body_that_is_not_the_format_is_400(hook: SignedHook) -> None:
    for body, content_type in MALFORMED[hook.format]:
        answer = hook.post(body, content_type=content_type)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "malformed" and "\n" not in answer.json()["error"]["message"]
    assert hook.queued() == []
    assert hook.counts() == {"malformed": len(MALFORMED[hook.format])}


def test_the_set_up_printed_for_github_and_cloudevents(watcher: Watcher, hook_server: ApiServer) -> None:
    assert watcher.add_registry("r1", "https://ghcr.io", "--no-verify").exit_code == 0
    for hook_format, fragments in (
        ("github", ["Content type:   application/json", "Packages, Registry packages", "events[]=registry_package"]),
        (
            "cloudevents",
            ["application/cloudevents+json", "X-Hub-Signature-256: sha256=", "repository_url=ghcr.io/REPOSITORY"],
        ),
    ):
        result = watcher.cli("registry", "webhook", "r1", "--format", hook_format)
        assert result.exit_code == 0, result.output
        secret = result.output.split("secret: ", 1)[1].split("\n", 1)[0]
        printed = result.output.split(f"On the registry's side ({hook_format}):\n", 1)[1]
        for fragment in [f"{hook_server.url}/hooks/v1/r1", secret, *fragments]:
            assert fragment in printed, (fragment, printed)
