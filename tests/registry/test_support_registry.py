"""Proof that the real-registry test infrastructure works in every auth mode."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import httpx
import jwt
import pytest

from tests.support.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
)
from tests.support.token_server import Grant, TokenServer

if TYPE_CHECKING:
    # Imported for types only: importing the plugin module before pytest
    # loads it would stop pytest from assertion-rewriting it.
    from tests.support.fixtures import RegistryEnv, RegistryFactory

pytest_plugins = ["tests.support.fixtures"]

USERNAME = "alice"  # what the fixtures configure (tests.support.fixtures.USERNAME)
PASSWORD = "s3cret-pass"


def _status(exc: pytest.ExceptionInfo[RegistryError]) -> int | None:
    return exc.value.status_code


def test_anonymous_push_retag_delete(registry: RegistryEnv, unique_repo: str) -> None:
    client = registry.client
    digest = client.push_image(unique_repo, "v1")
    assert digest.startswith("sha256:")
    assert client.digest(unique_repo, "v1") == digest

    assert client.retag(unique_repo, "v1", "v2") == digest
    assert client.tags(unique_repo) == ["v1", "v2"]
    assert client.digest(unique_repo, "v2") == digest

    other = client.push_image(unique_repo, "other")
    assert other != digest

    # Deleting by digest removes every tag that pointed at it.
    assert client.delete(unique_repo, "v1") == digest
    assert client.tags(unique_repo) == ["other"]
    with pytest.raises(RegistryError) as exc:
        client.digest(unique_repo, "v2")
    assert _status(exc) == 404


def test_seeded_pushes_are_reproducible_in_both_formats(registry: RegistryEnv, unique_repo: str) -> None:
    client = registry.client
    oci = client.push_image(unique_repo, "a", seed="s1")
    assert client.push_image(unique_repo, "b", seed="s1") == oci
    assert client.push_image(unique_repo, "c", seed="s2") != oci
    docker = client.push_image(unique_repo, "d", seed="s1", media_type="docker")
    assert docker != oci
    assert client.get_manifest(unique_repo, "a")[1] == OCI_MANIFEST
    assert client.get_manifest(unique_repo, "d")[1] == DOCKER_MANIFEST


def test_push_index(registry: RegistryEnv, unique_repo: str) -> None:
    client = registry.client
    amd = client.push_image(unique_repo, "amd64", platform="linux/amd64")
    arm = client.push_image(unique_repo, "arm64", platform="linux/arm64", media_type="docker")
    index = client.push_index(unique_repo, "multi", [amd, arm])
    body, media_type, digest = client.get_manifest(unique_repo, "multi")
    assert (media_type, digest) == (OCI_INDEX, index)
    entries = json.loads(body)["manifests"]
    assert [(e["digest"], e["mediaType"], e["platform"]["architecture"]) for e in entries] == [
        (amd, OCI_MANIFEST, "amd64"),
        (arm, DOCKER_MANIFEST, "arm64"),
    ]


def test_basic_auth(basic_registry: RegistryEnv, unique_repo: str) -> None:
    digest = basic_registry.client.push_image(unique_repo, "v1")
    assert basic_registry.client.retag(unique_repo, "v1", "v2") == digest

    assert httpx.get(f"{basic_registry.url}/v2/").status_code == 401
    bad = RegistryClient(basic_registry.url, username=USERNAME, password="wrong")
    with bad, pytest.raises(RegistryError) as exc:
        bad.digest(unique_repo, "v1")
    assert _status(exc) == 401
    with RegistryClient(basic_registry.url) as anonymous, pytest.raises(RegistryError) as exc:
        anonymous.tags(unique_repo)
    assert _status(exc) == 401


def test_token_auth_flow(token_registry: RegistryEnv, unique_repo: str) -> None:
    client, ts = token_registry.client, token_registry.token_server
    assert ts is not None
    digest = client.push_image(unique_repo, "v1")
    assert client.retag(unique_repo, "v1", "v2") == digest
    assert client.tags(unique_repo) == ["v1", "v2"]
    assert client.delete(unique_repo, "v2") == digest
    assert client.tags(unique_repo) == []
    assert unique_repo in client.catalog()

    # pull,push for the push; widened with delete for the delete; catalog.
    assert ts.tokens_issued == client.tokens_fetched == 3
    assert [r.scopes for r in ts.requests] == [
        (f"repository:{unique_repo}:pull,push",),
        (f"repository:{unique_repo}:pull,push,delete",),
        ("registry:catalog:*",),
    ]
    assert all(r.username == USERNAME and r.status == 200 for r in ts.requests)

    # The registry accepted JWTs carrying the signing cert chain in x5c.
    token = ts.issue_token(USERNAME, [Grant("repository", unique_repo, ("pull",))])
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert base64.b64decode(header["x5c"][0])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer
    resp = httpx.get(
        f"{token_registry.url}/v2/{unique_repo}/tags/list",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200


def test_token_auth_refuses_wrong_password(token_registry: RegistryEnv, unique_repo: str) -> None:
    ts = token_registry.token_server
    assert ts is not None
    resp = httpx.get(ts.realm, params={"service": ts.service}, auth=(USERNAME, "wrong"))
    assert resp.status_code == 401
    assert httpx.get(ts.realm, params={"service": ts.service}).status_code == 401  # anonymous

    bad = RegistryClient(token_registry.url, username=USERNAME, password="wrong")
    with bad, pytest.raises(RegistryError) as exc:
        bad.push_image(unique_repo, "v1")
    assert _status(exc) == 401
    assert ts.tokens_issued == 0
    assert [r.status for r in ts.requests] == [401, 401, 401]


def test_token_server_oauth2_password_grant(token_registry: RegistryEnv, unique_repo: str) -> None:
    ts = token_registry.token_server
    assert ts is not None
    token_registry.client.push_image(unique_repo, "v1")
    form = {
        "grant_type": "password",
        "username": USERNAME,
        "password": PASSWORD,
        "service": ts.service,
        "scope": f"repository:{unique_repo}:pull",
    }
    resp = httpx.post(ts.realm, data=form)
    assert resp.status_code == 200
    body = resp.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == ts.expires_in
    tags = httpx.get(
        f"{token_registry.url}/v2/{unique_repo}/tags/list",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert tags.json()["tags"] == ["v1"]
    assert httpx.post(ts.realm, data={**form, "password": "wrong"}).status_code == 401


def test_token_expiry_has_a_minute_of_leeway(token_registry: RegistryEnv, unique_repo: str) -> None:
    ts = token_registry.token_server
    assert ts is not None
    token_registry.client.push_image(unique_repo, "v1")
    grants = [Grant("repository", unique_repo, ("pull",))]
    url = f"{token_registry.url}/v2/{unique_repo}/tags/list"
    now = int(time.time())

    def status(token: str) -> int:
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code

    assert status(ts.issue_token(USERNAME, grants, expires_in=10, issued_at=now - 30)) == 200
    assert status(ts.issue_token(USERNAME, grants, expires_in=10, issued_at=now - 120)) == 401
    assert status(ts.issue_token(USERNAME, grants, service="another-service")) == 401


def test_token_check_callback_and_anonymous_pull(registry_factory: RegistryFactory, unique_repo: str) -> None:
    def google_like(username: str, password: str) -> bool:
        return username == "oauth2accesstoken" and password.startswith("ya29.")

    with TokenServer(check=google_like, anonymous_pull=True) as ts:
        env = registry_factory("token", username="oauth2accesstoken", password="ya29.fake", token_server=ts)
        digest = env.client.push_image(unique_repo, "v1")
        with RegistryClient(env.url) as anonymous:
            assert anonymous.digest(unique_repo, "v1") == digest
            with pytest.raises(RegistryError) as exc:
                anonymous.push_image(unique_repo, "v2")
        assert _status(exc) == 401
        anonymous_grants = [r.granted for r in ts.requests if r.username is None]
        assert anonymous_grants[-1] == (Grant("repository", unique_repo, ("pull",)),)


def test_stop_start_keeps_port_and_data(registry_factory: RegistryFactory, unique_repo: str) -> None:
    env = registry_factory("basic")
    digest = env.client.push_image(unique_repo, "v1")
    url = env.url

    env.server.stop()
    assert not env.server.running
    with pytest.raises(httpx.TransportError):
        env.client.tags(unique_repo)

    env.server.start()
    assert env.url == url
    assert env.client.digest(unique_repo, "v1") == digest
    assert env.client.tags(unique_repo) == ["v1"]


@pytest.mark.parametrize("mode", ["registry", "basic_registry", "token_registry"])
def test_skopeo_sees_pushed_image(mode: str, request: pytest.FixtureRequest, unique_repo: str) -> None:
    skopeo = shutil.which("skopeo")
    assert skopeo, "skopeo is needed (apt-get install skopeo)"
    env: RegistryEnv = request.getfixturevalue(mode)
    digest = env.client.push_image(unique_repo, "v1", media_type="docker")
    creds = ["--creds", f"{env.username}:{env.password}"] if env.username else ["--no-creds"]
    result = subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", *creds, f"docker://{env.host}/{unique_repo}:v1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
