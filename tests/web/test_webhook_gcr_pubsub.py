"""The `gcr-pubsub` receiver: a Pub/Sub push of the `gcr` topic's message, authenticated by the OIDC token
Google signs for the push service account (here the fake certificate endpoint's keys sign it), against a
`gcr` registry made of the real token-auth registry behind the GCR fake, whose access tokens the fake
Google token endpoint mints from the registry's own service-account key.

A push naming a real change re-lists the image's repository and the true event reaches the stream; a
replay, a forged tag, another project or host emit nothing; any token that is not Google's for that account
and this receiver's URL is 401 and polls nothing; Google's certificates are fetched once."""

from __future__ import annotations

import base64
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
from tests.support.token_server import TokenServer
from tests.support.webhooks import prove, sample
from tests.web.test_webhooks import broker, queued, server, webhook_counts  # noqa: F401 (fixtures)
from watcher import googleoidc, polling
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
class Pushes:
    """Registry r1 (provider gcr, the GCR fake's URL, the account's key) with its gcr-pubsub receiver on."""

    client: httpx.Client
    url: str  # the receiver's: the audience of the push tokens
    registry: RegistryEnv
    host: str  # the GCR fake's, as the gcr topic's messages name images
    certs: FakeGoogleCerts
    email: str  # the push service account's

    def token(self, **change: Any) -> str:
        """A push token as Google signs it for the push account and this receiver (unless changed)."""
        claims: dict[str, Any] = {"audience": self.url, "email": self.email} | change
        return self.certs.token(**claims)


@pytest.fixture
def pubsub(
    watcher: Watcher,
    server: ApiServer,  # noqa: F811
    gcr: tuple[RegistryEnv, FakeGcr],
    account: ServiceAccount,
    google: tuple[FakeGoogleTokenServer, FakeGoogleCerts],
    tmp_path: Path,
) -> Iterator[Pushes]:
    key = tmp_path / "key.json"
    key.write_text(json.dumps(account.info(google[0].token_uri)))
    extra = ("--project-id", PROJECT, "--json-key", f"@{key}", "--repository", f"{PROJECT}/*", "--no-verify")
    result = watcher.add_registry("r1", gcr[1].url, *extra, provider="gcr")
    assert result.exit_code == 0, result.output
    enabled = watcher.cli("registry", "webhook", "r1", "--json")  # gcr → gcr-pubsub by default
    assert enabled.exit_code == 0, enabled.output
    assert json.loads(enabled.output)["format"] == "gcr-pubsub"
    host = gcr[1].url.removeprefix("http://")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield Pushes(client, json.loads(enabled.output)["url"], gcr[0], host, google[1], account.email)


def push_request(message: dict[str, Any]) -> bytes:
    """The sample Pub/Sub push request carrying `message` as the gcr topic's data."""
    request = sample("gcr-pubsub-insert.json")
    request["message"]["data"] = base64.b64encode(json.dumps(message).encode()).decode()
    request["message"]["messageId"] = request["message"]["message_id"] = str(secrets.randbelow(10**16))
    return json.dumps(request).encode()


def insert(host: str, repository: str, tag: str, digest: str) -> bytes:
    return push_request(
        {"action": "INSERT", "digest": f"{host}/{repository}@{digest}", "tag": f"{host}/{repository}:{tag}"}
    )


def deliver(client: httpx.Client, body: bytes, token: str | None, path: str = "/hooks/v1/r1") -> httpx.Response:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    return client.post(path, content=body, headers=headers)


def test_a_pubsub_push_of_a_real_push_relists_the_image(
    watcher: Watcher,
    broker: str,  # noqa: F811
    pubsub: Pushes,
) -> None:
    client, host, certs = pubsub.client, pubsub.host, pubsub.certs
    repository = f"{PROJECT}/app-{secrets.token_hex(3)}"
    pubsub.registry.client.push_image(repository, "v1")
    polling.poll("r1")
    token = pubsub.token()

    def notice(step: str, digest: str) -> tuple[bytes, str]:
        if step == "delete":  # GCR announces a tag's deletion by the tag alone
            return push_request({"action": "DELETE", "tag": f"{host}/{repository}:v2"}), "application/json"
        return insert(host, repository, "v404" if step == "forged" else "v2", digest), "application/json"

    prove(watcher, broker, pubsub.registry.client, repository, lambda body, _: deliver(client, body, token), notice)
    for elsewhere in (
        insert(host, f"other-proj/app-{secrets.token_hex(3)}", "v1", NOWHERE),  # another project
        insert("gcr.io", repository, "v2", NOWHERE),  # another host
        push_request({"action": "INSERT"}).replace(b'"data"', b'"nodata"'),  # a message without data
    ):
        answer = deliver(client, elsewhere, token)
        assert answer.status_code == 202 and answer.json()["outcome"] == "ignored", answer.text
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"accepted": 4, "ignored": 3}
    assert certs.hits == 1  # Google's certificates were fetched once for all of these


def test_any_token_but_googles_for_the_push_account_and_this_url_is_401(
    watcher: Watcher,
    broker: str,  # noqa: F811
    pubsub: Pushes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, url, certs = pubsub.client, pubsub.url, pubsub.certs
    body = insert(pubsub.host, f"{PROJECT}/app", "v1", NOWHERE)
    tokens = {
        "none": None,
        "the webhook secret": json.loads(watcher.cli("registry", "webhook", "r1", "--json").output)["secret"],
        "bad signature": pubsub.token(key=rsa_key(3)),
        "wrong audience": pubsub.token(audience=url.replace("/r1", "/r2")),
        "wrong email": pubsub.token(email=f"attacker@{PROJECT}.iam.gserviceaccount.com"),
        "email not verified": pubsub.token(email_verified=False),
        "expired": pubsub.token(issued_at=1_700_000_000),
        "wrong issuer": pubsub.token(issuer="https://evil.example.com"),
    }
    for why, token in tokens.items():
        answer = deliver(client, body, token)
        assert answer.status_code == 401, (why, answer.text)
        assert answer.json()["error"]["code"] == "unauthorized"
    valid = pubsub.token()
    assert deliver(client, body, valid, path=f"/hooks/v1/r1/{tokens['the webhook secret']}").status_code == 401
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"unauthorized": len(tokens) + 1}
    assert valid not in caplog.text and str(tokens["the webhook secret"]) not in caplog.text
    assert googleoidc.certs_for(certs.certs_url).fetches == 1


def test_a_push_that_is_not_a_gcr_message_is_400(
    watcher: Watcher,
    broker: str,  # noqa: F811
    pubsub: Pushes,
) -> None:
    client, host, token = pubsub.client, pubsub.host, pubsub.token()
    bodies = [
        b"not json",
        b"[]",
        b'{"message": "x"}',
        b'{"message": {"data": "not base64!"}}',
        b'{"message": {"data": "' + base64.b64encode(b"[1]") + b'"}}',
        push_request({"action": "UPDATE", "digest": "x"}),
        push_request({"action": "INSERT"}),
        push_request({"action": "INSERT", "tag": f"{host}/{PROJECT}/a..b:v1"}),
    ]
    for body in bodies:
        answer = deliver(client, body, token)
        assert answer.status_code == 400, (body, answer.text)
    assert queued(watcher, broker) == []
    assert webhook_counts(watcher) == {"malformed": len(bodies)}


def test_the_set_up_names_the_registrys_service_account(watcher: Watcher, pubsub: Pushes) -> None:
    url, email = pubsub.url, pubsub.email
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
