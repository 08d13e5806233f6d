"""What each provider's documented notification names (tests/data/webhooks): the repository of a push or
delete, nothing for other events or for another registry's, and one clear line for a body that is not
that format. The receiver lists what is named; nothing here ever decides an event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.hooks import payload
from watcher.hooks.format import Auth, Malformed, Notification
from watcher.hooks.formats import FORMATS

HARBOR = "https://harbor.dev"
ACR = "https://myregistry.azurecr.io"
QUAY = "https://quay.io"
ECR = "https://123456789012.dkr.ecr.us-west-2.amazonaws.com"
HUB = "https://registry.hub.docker.com"


def named(format: str, body: Any, registry_url: str, content_type: str | None = "application/json") -> list[str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FORMATS[format].repositories(Notification(raw, content_type, registry_url))


@pytest.mark.parametrize(
    ("format", "sample", "registry_url", "expected"),
    [
        ("harbor", "harbor-push", HARBOR, ["library/busybox"]),
        ("harbor", "harbor-delete", HARBOR, ["library/busybox"]),
        ("harbor", "harbor-pull", HARBOR, []),
        ("harbor", "harbor-push", "https://harbor.internal:8443", []),
        ("dockerhub", "dockerhub-push", HUB, ["svendowideit/testhook"]),
        ("acr", "acr-push", ACR, ["hello-world"]),
        ("acr", "acr-delete", "https://MyRegistry.azurecr.io:443", ["hello-world"]),
        ("acr", "acr-chart-push", ACR, []),
        ("acr", "acr-push", "https://another.azurecr.io", []),
        ("quay", "quay-push", QUAY, ["mynamespace/repository"]),
        ("quay", "quay-push-legacy", QUAY, ["devtable/ubuntu"]),
        ("quay", "quay-build-queued", QUAY, []),
        ("quay", "quay-push", "https://quay.example.com", []),
        ("ecr-eventbridge", "ecr-eventbridge-push", ECR, ["my-repository-name"]),
        ("ecr-eventbridge", "ecr-eventbridge-delete", ECR, ["my-repository-name"]),
        ("ecr-eventbridge", "ecr-eventbridge-scan", ECR, []),
        ("ecr-eventbridge", "ecr-eventbridge-push", "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", []),
        ("ecr-eventbridge", "ecr-eventbridge-push", "https://210987654321.dkr.ecr.us-west-2.amazonaws.com", []),
    ],
)
def test_a_documented_payload_names_its_repository(
    format: str, sample: str, registry_url: str, expected: list[str]
) -> None:
    assert named(format, payload(sample), registry_url) == expected


def test_content_types_json_or_none_are_read_others_refused() -> None:
    body = payload("acr-push")
    for content_type in (None, "application/json; charset=utf-8", "application/cloudevents+json"):
        assert named("acr", body, ACR, content_type) == ["hello-world"]
    with pytest.raises(Malformed, match="content type 'text/plain' is not JSON"):
        named("acr", body, ACR, "text/plain")


def test_a_bare_docker_hub_name_is_in_its_namespace_or_library() -> None:
    body = payload("dockerhub-push")
    body["repository"]["repo_name"] = "testhook"
    assert named("dockerhub", body, HUB) == ["svendowideit/testhook"]
    del body["repository"]["namespace"]
    assert named("dockerhub", body, HUB) == ["library/testhook"]


def with_(sample: str, path: str, value: Any) -> dict[str, Any]:
    """The sample with one member (`a.b.c`) replaced, or removed when `value` is ...."""
    body = payload(sample)
    *parents, key = path.split(".")
    node = body
    for parent in parents:
        node = node[parent]
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return body


@pytest.mark.parametrize(
    ("format", "body", "message"),
    [
        ("harbor", b"<html>", "the body is not JSON, as a Harbor webhook"),
        ("harbor", [], "the body is a JSON array, not a Harbor webhook"),
        (
            "harbor",
            {"specversion": "1.0", "type": "harbor.artifact.pushed"},
            "set the webhook's Payload Format to Default",
        ),
        ("harbor", with_("harbor-push", "type", ...), '"type" is missing, not a string'),
        ("harbor", with_("harbor-push", "event_data", None), '"event_data" is a JSON null, not an object'),
        (
            "harbor",
            with_("harbor-push", "event_data.repository.repo_full_name", "Library/../x"),
            "not a valid OCI name",
        ),
        ("harbor", with_("harbor-push", "event_data.repository.name", "other"), "is not namespace/name"),
        ("harbor", with_("harbor-push", "event_data.resources", {}), '"resources" is not an array of objects'),
        ("dockerhub", with_("dockerhub-push", "push_data", ...), '"push_data" is missing, not an object'),
        ("dockerhub", with_("dockerhub-push", "repository.repo_name", 7), '"repo_name" is a JSON number'),
        ("dockerhub", with_("dockerhub-push", "repository.repo_name", "a" * 300), "longer than 255"),
        ("acr", with_("acr-push", "action", ["push"]), '"action" is a JSON array, not a string'),
        ("acr", with_("acr-push", "target", "hello-world"), '"target" is a JSON str, not an object'),
        ("acr", with_("acr-delete", "target.repository", None), "the repository None is not a valid OCI name"),
        ("quay", with_("quay-push", "repository", "UPPER/case"), "not a valid OCI name"),
        ("quay", with_("quay-push", "updated_tags", "latest"), '"updated_tags" is neither an array'),
        ("quay", with_("quay-push", "docker_url", "quay.io/someone/else"), "is not HOST/mynamespace/repository"),
        ("quay", with_("quay-push", "docker_url", ...), '"docker_url" is missing'),
        ("ecr-eventbridge", with_("ecr-eventbridge-push", "detail", []), '"detail" is a JSON array, not an object'),
        ("ecr-eventbridge", with_("ecr-eventbridge-push", "detail.repository-name", ...), "None is not a valid OCI"),
        ("ecr-eventbridge", with_("ecr-eventbridge-push", "source", None), '"source" is a JSON null'),
    ],
)
def test_a_body_not_of_the_format_is_one_clear_line(format: str, body: Any, message: str) -> None:
    with pytest.raises(Malformed) as raised:
        named(format, body, {"harbor": HARBOR, "acr": ACR, "quay": QUAY, "ecr-eventbridge": ECR}.get(format, HUB))
    text = str(raised.value)
    assert message in text and "\n" not in text and len(text) < 240, text


def test_each_format_authenticates_as_its_sender_can() -> None:
    auth = {name: FORMATS[name].auth for name in ("harbor", "dockerhub", "acr", "quay", "ecr-eventbridge")}
    assert auth == {
        "harbor": Auth.HEADER,
        "dockerhub": Auth.PATH,
        "acr": Auth.HEADER,
        "quay": Auth.PATH,
        "ecr-eventbridge": Auth.HEADER,
    }
