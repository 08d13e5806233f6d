"""`watcher registry apply`: declarative YAML, ${VAR} from the environment, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, RegistryEnv
from watcher.policies import applying
from watcher.registrations.applyfile import load_specs


def write(tmp_path: Path, registries: list[dict]) -> str:
    path = tmp_path / "registries.yaml"
    path.write_text(yaml.safe_dump({"registries": registries}))
    return str(path)


def test_apply_creates_updates_and_reads_the_environment(
    watcher: Watcher,
    basic_registry: RegistryEnv,
    registry: RegistryEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REG_PASSWORD", PASSWORD)
    entries: list[dict[str, Any]] = [
        {
            "name": "private",
            "provider": "oci",
            "url": basic_registry.url,
            "username": "alice",
            "password": "${REG_PASSWORD}",
            "interval": "30s",
        },
        {"name": "public", "provider": "oci", "url": registry.url, "repositories": ["team/*"], "include-tags": "^v"},
    ]
    first = watcher.cli("registry", "apply", "-f", write(tmp_path, entries))
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == ["created registry 'private'", "created registry 'public'"]
    entries[1]["interval"] = "1h"
    second = watcher.cli("registry", "apply", "-f", write(tmp_path, entries))
    assert second.stdout.splitlines() == ["unchanged registry 'private'", "updated registry 'public'"]
    shown = json.loads(watcher.cli("registry", "show", "public", "--json").stdout)
    assert (shown["interval"], shown["options"]["include_tags"]) == ("1h", "^v")
    assert PASSWORD not in first.output + second.output


def test_an_unset_variable_saves_nothing(watcher: Watcher, registry: RegistryEnv, tmp_path: Path) -> None:
    entries = [
        {"name": "ok", "provider": "oci", "url": registry.url},
        {
            "name": "broken",
            "provider": "oci",
            "url": registry.url,
            "username": "u",
            "password": "${WATCHER_TEST_UNSET_VAR}",
        },
    ]
    result = watcher.cli("registry", "apply", "-f", write(tmp_path, entries))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"watcher: {tmp_path / 'registries.yaml'}: registry #2 (broken): "
        "environment variable WATCHER_TEST_UNSET_VAR is not set"
    )
    assert "no registries" in watcher.cli("registry", "list").stdout


def test_one_failing_connection_saves_nothing(
    watcher: Watcher, registry: RegistryEnv, basic_registry: RegistryEnv, tmp_path: Path
) -> None:
    entries = [
        {"name": "ok", "provider": "oci", "url": registry.url},
        {"name": "bad", "provider": "oci", "url": basic_registry.url, "username": "alice", "password": "nope"},
    ]
    result = watcher.cli("registry", "apply", "-f", write(tmp_path, entries))
    assert result.exit_code == 1 and "registry 'bad': credentials refused" in result.stderr
    assert "no registries" in watcher.cli("registry", "list").stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("registries: [", "not valid YAML"),
        ("- just a list", "top-level `registries:` list"),
        ("registries:\n  - {name: a, provider: oci, url: 'https://h', colour: blue}", "unknown setting 'colour'"),
        (
            "registries:\n  - {name: a, provider: oci, url: 'https://h'}\n  - {name: a, provider: oci, url: 'https://h'}",
            "appears twice",
        ),
    ],
)
def test_bad_files_are_one_line(watcher: Watcher, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = watcher.cli("registry", "apply", "-f", str(path))
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_the_shipped_example_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "HARBOR_ROBOT_SECRET",
        "GHCR_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "DOCKERHUB_TOKEN",
    ):
        monkeypatch.setenv(var, "x")
    example = (Path(__file__).parents[2] / "config" / "registries.example.yaml").read_text()
    key = tmp_path / "gcp.json"
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "w@p.iam.gserviceaccount.com",
                "private_key": pem.decode(),
                "token_uri": "https://oauth2.googleapis.com/token",
                "project_id": "my-project",
            }
        )
    )
    path = tmp_path / "example.yaml"
    path.write_text(example.replace("/run/secrets/gcp-watcher.json", str(key)))
    specs = load_specs(path)
    assert [s.provider for s in specs] == ["oci", "oci", "ecr", "acr", "gcr", "dockerhub"]
    policies = applying.load(path).policies
    assert [(p.name, p.registry, p.policy.describe()) for p in policies] == [
        ("app-stable", "harbor", "semver >=1.4 <2"),
        ("app-nightly", "ghcr", "numeric asc filter '^main-(?P<ts>[0-9]+)-[0-9a-f]+$' extract '$ts'"),
    ]
