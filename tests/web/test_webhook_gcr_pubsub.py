# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""The `gcr-pubsub` receiver: a Pub/Sub push of the `gcr` topic's message, authenticated by the OIDC token
Google signs for the push service account (here the fake certificate endpoint's keys sign it), against a
`gcr` registry made of the real token-auth registry behind the GCR fake, whose access tokens the fake
Google token endpoint mints from the registry's own service-account key.

A push naming a real change re-lists the image's repository and the true event reaches the stream; a
replay, a forged tag, another project or host emit nothing; any token that is not Google's for that account
and this receiver's URL is 401 and polls nothing; Google's certificates are fetched once."""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Watcher
from tests.fakes.gcr import FakeGcr
from tests.fakes.google_certs import FakeGoogleCerts
from tests.fakes.google_token import FakeGoogleTokenServer, ServiceAccount, rsa_key
from tests.support.api_server import ApiServer
from tests.support.fixtures import RegistryEnv, RegistryFactory
from tests.support.hooks import Notice, broker, hook_server, payload, story  # noqa: F401 - fixtures
from tests.support.token_server import TokenServer
from tests.support.webhooks import PubSubHook
from watcher.hooks import googleoidc
from watcher.polling import poll as polling
from watcher.settings import get_settings

PROJECT = "watcher-proj"
NOWHERE = "sha256:" + "0" * 64


@pytest.fixture
def google(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeGoogleTokenServer, FakeGoogleCerts]]:
    """Google's token endpoint (the registry's access tokens) and certificate endpoint (the push tokens)."""
    with FakeGoogleTokenServer() as tokens, FakeGoogleCerts() as certs:
        monkeypatch.setenv("WATCHER_GOOGLE_CERTS_URL", certs.certs_url)
        get_settings.cache_clear()
        yield tokens, certs


@pytest.fixture
def account(google: tuple[FakeGoogleTokenServer, FakeGoogleCerts]) -> ServiceAccount:
    sa = ServiceAccount(PROJECT)
    google[0].register(sa)
    return sa


@pytest.fixture
def gcr(
    registry_factory: RegistryFactory, google: tuple[FakeGoogleTokenServer, FakeGoogleCerts]
) -> Iterator[tuple[RegistryEnv, FakeGcr]]:
    """The real registry, its realm taking Google access tokens as `oauth2accesstoken`, behind the GCR fake."""

    def google_token(user: str, password: str) -> bool:
        return user == "oauth2accesstoken" and google[0].accepts(password)

    with TokenServer({"alice": "s3cret-pass"}, check=google_token) as realm:
        env = registry_factory("token", token_server=realm)
        with FakeGcr(env.url) as fake:
            yield env, fake


@dataclass(frozen=True)
class Pubsub:
    hook: PubSubHook
    registry: RegistryEnv
    #: the GCR fake's host, as the gcr topic's messages name images
    host: str


@pytest.fixture
def pubsub(
    watcher: Watcher,
    hook_server: ApiServer,
    broker: str,
    gcr: tuple[RegistryEnv, FakeGcr],
    account: ServiceAccount,
    google: tuple[FakeGoogleTokenServer, FakeGoogleCerts],
    tmp_path: Path,
) -> Iterator[Pubsub]:
    """Registry r1 (provider gcr, the GCR fake's URL, the account's key) with its receiver on (gcr-pubsub,
    the default for gcr), its push service account the key's."""
    key = tmp_path / "key.json"
    key.write_text(json.dumps(account.info(google[0].token_uri)))
    extra = ("--project-id", PROJECT, "--json-key", f"@{key}", "--repository", f"{PROJECT}/*", "--no-verify")
    result = watcher.add_registry("r1", gcr[1].url, *extra, provider="gcr")
    assert result.exit_code == 0, result.output
    with httpx.Client(base_url=hook_server.url, timeout=10) as client:
        hook = PubSubHook.enable(watcher, broker, client, "gcr-pubsub")
        hook.certs, hook.email = google[1], account.email
        yield Pubsub(hook, gcr[0], gcr[1].url.removeprefix("http://"))


def push_request(message: dict[str, Any]) -> dict[str, Any]:
    """The sample Pub/Sub push request carrying `message` as the gcr topic's data."""
    request = copy.deepcopy(payload("gcr-pubsub-insert"))
    request["message"]["data"] = base64.b64encode(json.dumps(message).encode()).decode()
    request["message"]["messageId"] = request["message"]["message_id"] = str(secrets.randbelow(10**16))
    return request


def gcr_notice(host: str, digests: dict[str, str]) -> Notice:
    def notice(action: str, repository: str, tag: str) -> dict[str, Any]:
        if action == "delete":  # GCR announces a tag's deletion by the tag alone
            return push_request({"action": "DELETE", "tag": f"{host}/{repository}:{tag}"})
        digest = digests.get(tag, NOWHERE)
        return push_request(
            {"action": "INSERT", "digest": f"{host}/{repository}@{digest}", "tag": f"{host}/{repository}:{tag}"}
        )

    return notice


def test_a_pubsub_push_of_a_real_push(watcher: Watcher, pubsub: Pubsub) -> None:
    hook, registry, host = pubsub.hook, pubsub.registry, pubsub.host
    repository = f"{PROJECT}/app-{secrets.token_hex(3)}"
    registry.client.push_image(repository, "v1")
    polling.poll("r1")
    digests: dict[str, str] = {}
    story(
        hook,
        repository,
        lambda tag: digests.setdefault(tag, registry.client.push_image(repository, tag)),
        gcr_notice(host, digests),
        lambda tag: registry.client.delete(repository, tag),
    )
    counted = hook.counts()
    for elsewhere in (
        gcr_notice(host, {})("push", f"other-proj/app-{secrets.token_hex(3)}", "v1"),  # another project
        gcr_notice("gcr.io", {})("push", repository, "v2"),  # another host
        {"message": {"attributes": {"k": "v"}, "messageId": "1"}, "subscription": "projects/p/subscriptions/s"},
    ):
        answer = hook.post(elsewhere)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
    assert hook.queued() == []
    assert hook.counts() == counted | {"ignored": 3}
    assert pubsub.hook.certs is not None and pubsub.hook.certs.hits == 1  # fetched once for all of these


def test_any_token_but_googles_for_the_push_account_and_this_url_is_401(
    pubsub: Pubsub, caplog: pytest.LogCaptureFixture
) -> None:
    hook = pubsub.hook
    body = gcr_notice(pubsub.host, {})("push", f"{PROJECT}/app", "v1")
    tokens = {
        "the webhook secret": hook.secret,
        "bad signature": hook.token(key=rsa_key(3)),
        "wrong audience": hook.token(audience=hook.url.replace("/r1", "/r2")),
        "wrong email": hook.token(email=f"attacker@{PROJECT}.iam.gserviceaccount.com"),
        "email not verified": hook.token(email_verified=False),
        "expired": hook.token(issued_at=1_700_000_000),
        "wrong issuer": hook.token(issuer="https://evil.example.com"),
    }
    for why, token in tokens.items():
        answer = hook.post(body, secret=token)
        assert answer.status_code == 401, (why, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"
    valid = hook.token()
    in_path = hook.client.post(f"{hook.url}/{hook.secret}", json=body, headers={"Authorization": f"Bearer {valid}"})
    assert in_path.status_code == 401
    assert hook.queued() == []
    assert hook.counts() == {"unauthorized": len(tokens) + 1}
    assert valid not in caplog.text and hook.secret not in caplog.text
    assert hook.certs is not None and googleoidc.certs_for(hook.certs.certs_url).fetches == 1


def test_a_push_that_is_not_a_gcr_message_is_400(pubsub: Pubsub) -> None:
    hook, host = pubsub.hook, pubsub.host
    bodies: list[dict[str, Any] | bytes] = [
        b'{"message": "x"}',
        b'{"message": {"data": "not base64!"}}',
        b'{"message": {"data": "' + base64.b64encode(b"[1]") + b'"}}',
        push_request({"action": "UPDATE", "digest": "x"}),
        push_request({"action": "INSERT"}),
        push_request({"action": "INSERT", "tag": f"{host}/{PROJECT}/a..b:v1"}),
    ]
    for body in bodies:
        answer = hook.post(body)
        assert answer.status_code == 400, (body, answer.text)
    assert hook.queued() == []
    assert hook.counts() == {"malformed": len(bodies)}


def test_the_set_up_names_the_registrys_service_account(watcher: Watcher, pubsub: Pubsub) -> None:
    url, email = pubsub.hook.url, pubsub.hook.email
    result = watcher.cli("registry", "webhook", "r1")
    assert result.exit_code == 0, result.output
    printed = result.output.split("On the registry's side (gcr-pubsub):\n", 1)[1]
    for fragment in (
        f"gcloud pubsub topics create gcr --project={PROJECT}",
        f"gcloud pubsub subscriptions create watcher-r1 --project={PROJECT} --topic=gcr",
        f"--push-endpoint={url}",
        f"--push-auth-service-account={email}",
        f"--push-auth-token-audience={url}",
    ):
        assert fragment in printed, (fragment, printed)


def test_gcr_pubsub_needs_a_gcr_registry_with_a_key(watcher: Watcher) -> None:
    assert watcher.add_registry("r1", "https://registry.example.com", "--no-verify").exit_code == 0
    result = watcher.cli("registry", "webhook", "r1", "--format", "gcr-pubsub")
    assert result.exit_code != 0
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "webhook format 'gcr-pubsub' needs a gcr registry with a --json-key" in line
