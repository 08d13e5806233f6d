"""`watcher registry webhook NAME --format F` prints the exact registry-side set-up of each provider: the
URL (with the secret as its last segment where the sender cannot send a header, also in `--json`), and
the secret where the provider sends it; that secret is shown by this command only."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from tests.conftest import Watcher
from watcher.hooks.ecr_eventbridge import EVENT_PATTERN
from watcher.settings import get_settings

BASE = "https://watcher.example.com/hooks/v1/r1"


@pytest.fixture
def public(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> Watcher:
    monkeypatch.setenv("WATCHER_PUBLIC_URL", "https://watcher.example.com/")
    get_settings.cache_clear()
    return watcher


def enable(watcher: Watcher, format: str, url: str, *extra: str, provider: str = "oci") -> tuple[dict[str, Any], str]:
    """Add r1, enable its receiver in `format`: (the --json object, the set-up text)."""
    added = watcher.add_registry("r1", url, "--no-verify", *extra, provider=provider)
    assert added.exit_code == 0, added.output
    shown = watcher.cli("registry", "webhook", "r1", "--format", format, "--json")
    assert shown.exit_code == 0, shown.output
    text = watcher.cli("registry", "webhook", "r1")
    assert text.exit_code == 0, text.output
    hook: dict[str, Any] = json.loads(shown.output)
    assert f"url: {hook['url']}\nsecret: {hook['secret']}\nformat: {format}\n" in text.output
    return hook, text.output.split(f"On the registry's side ({format}):\n", 1)[1]


def commands(setup: str) -> list[list[str]]:
    """The shell commands of a set-up, each split as the shell would (continuation lines joined)."""
    lines = [line.strip() for line in setup.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line.split(" ", 1)[0] in ("curl", "az", "aws") or "=$(" in line]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_harbor_gets_the_auth_header_in_the_ui_and_the_api(public: Watcher) -> None:
    hook, setup = enable(public, "harbor", "https://harbor.example.com")
    assert hook["url"] == BASE
    assert f"  Endpoint URL: {BASE}\n" in setup and f"  Auth Header: Bearer {hook['secret']}\n" in setup
    assert "  Event Type: Artifact pushed, Artifact deleted\n" in setup and "Payload Format: Default" in setup
    (curl,) = [words for words in commands(setup) if words[:1] == ["curl"]]
    assert "https://harbor.example.com/api/v2.0/projects/PROJECT/webhook/policies" in curl
    (target,) = json.loads(option(curl, "-d"))["targets"]
    assert target == {
        "type": "http",
        "address": BASE,
        "auth_header": f"Bearer {hook['secret']}",
        "payload_format": "Default",
        "skip_cert_verify": False,
    }
    assert json.loads(option(curl, "-d"))["event_types"] == ["PUSH_ARTIFACT", "DELETE_ARTIFACT"]


def test_acr_gets_the_az_command_with_the_header(public: Watcher) -> None:
    hook, setup = enable(
        public, "acr", "https://myregistry.azurecr.io", "--username", "u", "--password", "p", provider="acr"
    )
    (create,) = commands(setup.split("(Add --scope", 1)[0])
    assert create[:4] == ["az", "acr", "webhook", "create"]
    assert option(create, "--registry") == "myregistry" and option(create, "--uri") == BASE
    assert create[create.index("--actions") + 1 : create.index("--actions") + 3] == ["push", "delete"]
    assert option(create, "--headers") == f"Authorization=Bearer {hook['secret']}"


def test_ecr_gets_an_eventbridge_connection_destination_role_and_rule(public: Watcher) -> None:
    url = "https://123456789012.dkr.ecr.us-west-2.amazonaws.com"
    hook, setup = enable(public, "ecr-eventbridge", url, "--access-key", "AKIAX", "--secret-key", "s", provider="ecr")
    assert "https" not in setup.split("\n")[-1]  # no warning: the URL is https
    run = {" ".join(words[:3]).split("=")[-1]: words for words in commands(setup)}
    connection = run["$(aws events create-connection"]
    assert option(connection, "--region") == "us-west-2" and option(connection, "--authorization-type") == "API_KEY"
    assert json.loads(option(connection, "--auth-parameters")) == {
        "ApiKeyAuthParameters": {"ApiKeyName": "Authorization", "ApiKeyValue": f"Bearer {hook['secret']}"}
    }
    destination = run["$(aws events create-api-destination"]
    assert option(destination, "--invocation-endpoint") == BASE and option(destination, "--http-method") == "POST"
    assert (
        json.loads(option(run["aws events put-rule"], "--event-pattern"))
        == EVENT_PATTERN
        == {
            "source": ["aws.ecr"],
            "detail-type": ["ECR Image Action"],
            "detail": {"action-type": ["PUSH", "DELETE"], "result": ["SUCCESS"]},
        }
    )
    assert option(run["aws events put-targets"], "--targets") == "Id=watcher,Arn=$DESTINATION,RoleArn=$ROLE"
    policy = json.loads(option(run["aws iam put-role-policy"], "--policy-document"))
    assert policy["Statement"][0]["Resource"] == "$DESTINATION"  # the shell fills it in
    assert policy["Statement"][0]["Action"] == "events:InvokeApiDestination"


def test_eventbridge_wants_an_https_url(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_LISTEN", "127.0.0.1:9999")
    get_settings.cache_clear()
    url = "https://123456789012.dkr.ecr.us-west-2.amazonaws.com"
    _, setup = enable(watcher, "ecr-eventbridge", url, "--access-key", "AKIAX", "--secret-key", "s", provider="ecr")
    assert setup.rstrip().endswith("set WATCHER_PUBLIC_URL to the watcher's https address")


@pytest.mark.parametrize(
    ("format", "url", "extra", "provider"),
    [
        ("dockerhub", "https://registry.hub.docker.com", ("--namespace", "acme"), "dockerhub"),
        ("quay", "https://quay.io", (), "oci"),
    ],
)
def test_a_sender_without_headers_gets_the_secret_in_the_url_shown_by_this_command_only(
    public: Watcher, format: str, url: str, extra: tuple[str, ...], provider: str
) -> None:
    hook, setup = enable(public, format, url, *extra, provider=provider)
    secret = hook["secret"]
    assert hook["url"] == f"{BASE}/{secret}"
    assert f"  Webhook URL: {BASE}/{secret}\n" in setup
    if format == "quay":
        (curl,) = [words for words in commands(setup) if words[:1] == ["curl"]]
        assert json.loads(option(curl, "-d"))["config"] == {"url": f"{BASE}/{secret}"}
        assert json.loads(option(curl, "-d"))["event"] == "repo_push"
    assert public.cli("registry", "webhook", "r1", "--json").output.count(secret) == 2  # url and secret
    assert json.loads(public.cli("registry", "webhook", "r1", "--rotate", "--json").output)["url"] != hook["url"]
    for args in (("registry", "show", "r1", "--json"), ("registry", "list", "--json"), ("status", "--json")):
        result = public.cli(*args)
        assert result.exit_code == 0, result.output
        assert secret not in result.output and "/hooks/v1/r1/" not in result.output
