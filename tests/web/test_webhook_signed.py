"""The `github` and `cloudevents` receivers (bodies signed with `X-Hub-Signature-256`) against the real
registry, registered as `oci`: a signed notification of a real push re-lists the repository and the true
event reaches the stream; a replay or a forged tag emits nothing new; a bad signature is 401 and polls
nothing; a body that is not the format is 400; anything else GitHub or a CI system sends is ignored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv
from tests.support.webhooks import Notice, enable, prove, sample, signature
from tests.web.test_webhooks import broker, queued, server, webhook_counts  # noqa: F401 (fixtures)
from watcher import polling

NOWHERE = "sha256:" + "0" * 64
STRUCTURED = "application/cloudevents+json"


# ---- the payloads, with the names really pushed -----------------------------------------------------
def github(event: str, repository: str, tag: str, digest: str, action: str = "published") -> bytes:
    """GitHub's `package` / `registry_package` payload for ghcr.io/REPOSITORY:TAG (the owner as GitHub
    spells it, capitals included)."""
    payload = sample(f"github-{event}-published.json")
    owner, name = repository.split("/", 1)
    package = payload[event]
    package["owner"]["login"] = package["namespace"] = owner.upper()
    package["name"] = name
    version = package["package_version"]
    version["name"] = version["version"] = digest
    version["container_metadata"]["tag"] = {"name": tag, "digest": digest}
    version["package_url"] = f"ghcr.io/{repository}:{tag}"
    payload["action"] = action
    return json.dumps(payload).encode()


def cdevent(host: str, repository: str, tag: str, digest: str, kind: str = "published") -> dict[str, Any]:
    """The sample CloudEvent, its CDEvent naming HOST/REPOSITORY@DIGEST as the watcher's own events do."""
    event: dict[str, Any] = sample("cloudevents-artifact-published.json")
    name = repository.rsplit("/", 1)[-1]
    version = "0.2.0" if kind == "deleted" else "0.3.0"
    event["type"] = event["data"]["context"]["type"] = f"dev.cdevents.artifact.{kind}.{version}"
    event["data"]["subject"]["id"] = (
        f"pkg:oci/{name}@{digest.replace(':', '%3A')}?repository_url={host}/{repository}&tag={tag}"
    )
    return event


Send = Callable[..., httpx.Response]


@pytest.fixture
def send(server: ApiServer) -> Iterator[Callable[[str], Send]]:  # noqa: F811
    """`send(secret)(body, content_type=…, signed_with=…, path=…)`: POST a body signed under the secret."""
    with httpx.Client(base_url=server.url, timeout=10) as client:

        def sender(secret: str) -> Send:
            def post(
                body: bytes,
                content_type: str = "application/json",
                signed_with: str | None = None,
                header: str | None = None,
                path: str = "/hooks/v1/r1",
            ) -> httpx.Response:
                headers = {"Content-Type": content_type, "X-GitHub-Event": "package"}
                value = header if header is not None else signature(body, signed_with or secret)
                if value:
                    headers["X-Hub-Signature-256"] = value
                return client.post(path, content=body, headers=headers)

            return post

        yield sender


@dataclass(frozen=True)
class Receiving:
    format: str
    secret: str
    post: Send
    host: str


@pytest.fixture(params=["github", "cloudevents"])
def receiving(
    request: pytest.FixtureRequest, watcher: Watcher, send: Callable[[str], Send], registry: RegistryEnv
) -> Receiving:
    """Registry r1 (oci, the real registry, watching team/*) with its receiver on in each signed format."""
    assert watcher.add_registry("r1", registry.url, "--repository", "team/*", "--no-verify").exit_code == 0
    secret = enable(watcher, request.param)["secret"]
    return Receiving(request.param, secret, send(secret), registry.host)


def watched(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> str:
    """Registry r1 (oci, the real registry) watching UNIQUE/*, baselined with UNIQUE/app:v1; UNIQUE/app."""
    repository = f"{unique_repo}/app"
    registry.client.push_image(repository, "v1")
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    polling.poll("r1")
    return repository


# ---- a real push, and what is not one -------------------------------------------------------------------
def github_notice(event: str, repository: str) -> Notice:
    def notice(step: str, digest: str) -> tuple[bytes, str]:
        if step == "forged":
            return github(event, repository, "v404", NOWHERE), "application/json"
        return github(
            event, repository, "v2", digest, "deleted" if step == "delete" else "published"
        ), "application/json"

    return notice


def cloudevents_notice(host: str, repository: str) -> Notice:
    """Structured mode, a replay in binary mode, a forged event in a batch beside one about another registry."""

    def notice(step: str, digest: str) -> tuple[bytes, str]:
        event = cdevent(host, repository, "v2", digest, "deleted" if step == "delete" else "published")
        if step == "replay":
            return json.dumps(event["data"]).encode(), "application/json"
        if step == "forged":
            elsewhere = cdevent("ghcr.io", f"{repository}-other", "v1", digest)
            batch = [cdevent(host, repository, "v404", NOWHERE), elsewhere]
            return json.dumps(batch).encode(), "application/cloudevents-batch+json"
        return json.dumps(event).encode(), STRUCTURED

    return notice


@pytest.mark.parametrize("flavour", ["github-package", "github-registry_package", "cloudevents"])
def test_a_notification_of_a_real_push_relists_the_real_registry(
    watcher: Watcher,
    broker: str,  # noqa: F811
    send: Callable[[str], Send],
    registry: RegistryEnv,
    unique_repo: str,
    flavour: str,
) -> None:
    hook_format, _, event = flavour.partition("-")
    repository = watched(watcher, registry, unique_repo)
    post = send(enable(watcher, hook_format)["secret"])
    notice = github_notice(event, repository) if event else cloudevents_notice(registry.host, repository)
    prove(watcher, broker, registry.client, repository, post, notice)
    assert webhook_counts(watcher) == {"accepted": 4}


def ignored_github(host: str) -> list[tuple[bytes, str]]:
    npm = json.loads(github("package", "team/app", "v1", NOWHERE))
    npm["package"]["package_type"] = npm["package"]["ecosystem"] = "npm"
    push_event = {"ref": "refs/heads/main", "repository": sample("github-ping.json")["repository"]}
    bodies = [
        json.dumps(sample("github-ping.json")).encode(),
        json.dumps(npm).encode(),
        json.dumps(push_event).encode(),
        github("package", "team/app", "v1", NOWHERE, action="in_progress"),
        github("registry_package", "elsewhere/app", "v1", NOWHERE),  # out of --repository scope
    ]
    return [(body, "application/json") for body in bodies]


def ignored_cloudevents(host: str) -> list[tuple[bytes, str]]:
    ours = cdevent(host, "team/app", "v1", NOWHERE)
    pipeline = json.loads(json.dumps(ours))
    pipeline["type"] = pipeline["data"]["context"]["type"] = "dev.cdevents.pipelinerun.finished.0.2.0"
    golang = json.loads(json.dumps(ours))
    golang["data"]["subject"]["id"] = "pkg:golang/example.com/team/app@v1.0.0"
    no_location = json.loads(json.dumps(ours))
    no_location["data"]["subject"]["id"] = f"pkg:oci/app@{NOWHERE}?tag=v1"
    github_event = {"specversion": "1.0", "id": "1", "source": "/github", "type": "com.github.push", "data": {}}
    events = [
        pipeline,
        golang,
        no_location,
        github_event,
        cdevent("registry.example.com", "team/app", "v1", NOWHERE),
        cdevent(host, "elsewhere/app", "v1", NOWHERE),  # out of --repository scope
    ]
    return [(json.dumps(event).encode(), STRUCTURED) for event in events]


def test_signed_events_about_anything_else_are_ignored(
    watcher: Watcher,
    broker: str,  # noqa: F811
    receiving: Receiving,
) -> None:
    bodies = (ignored_github if receiving.format == "github" else ignored_cloudevents)(receiving.host)
    for body, content_type in bodies:
        answer = receiving.post(body, content_type)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", (body, answer.text)
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"ignored": len(bodies)}


# ---- both: refused and malformed ------------------------------------------------------------------------
def test_a_missing_or_wrong_signature_is_401_and_polls_nothing(
    watcher: Watcher,
    broker: str,  # noqa: F811
    receiving: Receiving,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook_format, secret, post = receiving.format, receiving.secret, receiving.post
    body = (
        github("package", "team/app", "v1", NOWHERE)
        if hook_format == "github"
        else json.dumps(cdevent(receiving.host, "team/app", "v1", NOWHERE)).encode()
    )
    content_type = "application/json" if hook_format == "github" else STRUCTURED
    refused = [
        post(body, content_type, header=""),
        post(body, content_type, signed_with="not-the-secret"),
        post(body, content_type, header=signature(body + b" ", secret)),
        post(body, content_type, header=signature(body, secret).replace("sha256=", "sha1=")),
        post(body, content_type, header=signature(body, secret)[:-1]),
        post(body, content_type, path=f"/hooks/v1/r1/{secret}"),  # these formats sign; no secret in the URL
    ]
    assert [answer.status_code for answer in refused] == [401] * 6, [a.text for a in refused]
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"unauthorized": 6}
    assert secret not in caplog.text


MALFORMED = {
    "github": [
        (b"not json", "application/json"),
        (b"[]", "application/json"),
        (b'{"action": "published", "package": "ghcr.io/team/app"}', "application/json"),
        (b'{"package": {"package_type": "CONTAINER"}}', "application/json"),
        (b'{"action": "published", "package": {"package_type": "CONTAINER", "name": "app"}}', "application/json"),
        (
            b'{"action": "published", "package": {"package_type": "CONTAINER", "name": "a..b", '
            b'"owner": {"login": "team"}}}',
            "application/json",
        ),
    ],
    "cloudevents": [
        (b"not json", STRUCTURED),
        (b"{}", STRUCTURED),
        (b'{"type": "dev.cdevents.artifact.published.0.3.0", "data": "x"}', STRUCTURED),
        (b"{}", "application/cloudevents-batch+json"),
        (b'{"context": {"type": "dev.cdevents.artifact.published.0.3.0"}, "subject": {}}', "application/json"),
        (
            b'{"context": {"type": "dev.cdevents.artifact.published.0.3.0"}, '
            b'"subject": {"id": "pkg:oci/app?repository_url=HOST/Team/../app"}}',
            "application/json",
        ),
        (b"{}", "text/plain"),
    ],
}


def test_a_signed_body_that_is_not_the_format_is_400(
    watcher: Watcher,
    broker: str,  # noqa: F811
    receiving: Receiving,
) -> None:
    for body, content_type in MALFORMED[receiving.format]:
        answer = receiving.post(body.replace(b"HOST", receiving.host.encode()), content_type)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] == "malformed"
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"malformed": len(MALFORMED[receiving.format])}


def test_the_set_up_printed_for_github_and_cloudevents(watcher: Watcher, server: ApiServer) -> None:  # noqa: F811
    assert watcher.add_registry("r1", "https://ghcr.io", "--no-verify").exit_code == 0
    for hook_format, fragments in (
        ("github", ["Content type:   application/json", "Packages, Registry packages", "events[]=registry_package"]),
        ("cloudevents", ["application/cloudevents+json", "X-Hub-Signature-256: sha256=", "openssl dgst -sha256"]),
    ):
        result = watcher.cli("registry", "webhook", "r1", "--format", hook_format)
        assert result.exit_code == 0, result.output
        secret = enable(watcher, hook_format)["secret"]
        printed = result.output.split(f"On the registry's side ({hook_format}):\n", 1)[1]
        for fragment in [f"{server.url}/hooks/v1/r1", secret, *fragments]:
            assert fragment in printed, (fragment, printed)
