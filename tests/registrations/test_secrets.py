"""Credentials: read from a value, a file or stdin; encrypted at rest; never shown anywhere."""

from __future__ import annotations

import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import update

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, RegistryEnv
from watcher.db import session_scope
from watcher.models import Registry
from watcher.registrations import vault


def test_a_password_is_stored_encrypted_and_never_shown(
    watcher: Watcher, basic_registry: RegistryEnv, unique_repo: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    basic_registry.client.push_image(f"{unique_repo}/app", "v1")
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    outputs = [
        watcher.add_registry(
            "r1",
            basic_registry.url,
            "--username",
            "alice",
            "--password",
            f"@{secret_file}",
            "--repository",
            f"{unique_repo}/*",
        )
    ]
    assert outputs[0].exit_code == 0, outputs[0].output
    for command in (
        ["registry", "list"],
        ["registry", "list", "--json"],
        ["registry", "show", "r1"],
        ["registry", "show", "r1", "--json"],
        ["registry", "test", "r1"],
        ["poll", "r1", "--json"],
        ["events", "--json"],
    ):
        outputs.append(watcher.cli(*command))
        assert outputs[-1].exit_code == 0, outputs[-1].output
    shown = json.loads(watcher.cli("registry", "show", "r1", "--json").stdout)
    assert shown["credentials"] == {"password": "set", "username": "alice"}
    for result in outputs:
        assert PASSWORD not in result.output
    assert PASSWORD not in caplog.text
    database = sqlite3.connect(watcher.settings.effective_database_url.removeprefix("sqlite:///"))
    dump = "\n".join(database.iterdump())
    assert "alice" not in dump and PASSWORD not in dump  # the whole credential object is encrypted


def test_a_password_from_standard_input(watcher: Watcher, basic_registry: RegistryEnv) -> None:
    result = watcher.add_registry(
        "r1", basic_registry.url, "--username", "alice", "--password", "-", input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert watcher.cli("registry", "test", "r1").exit_code == 0


def test_another_secret_key_cannot_read_the_credentials(
    watcher: Watcher, basic_registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.settings import get_settings

    add = watcher.add_registry("r1", basic_registry.url, "--username", "alice", "--password", PASSWORD)
    assert add.exit_code == 0
    monkeypatch.setenv("WATCHER_SECRET_KEY", "a-different-key-of-enough-length")
    get_settings.cache_clear()
    result = watcher.cli("registry", "test", "r1")
    assert result.exit_code == 1
    assert "cannot be decrypted" in result.stderr and PASSWORD not in result.output


def test_a_generated_key_is_private_to_its_owner(
    watcher: Watcher, basic_registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.settings import get_settings

    monkeypatch.delenv("WATCHER_SECRET_KEY")
    get_settings.cache_clear()
    add = watcher.add_registry("r1", basic_registry.url, "--username", "alice", "--password", PASSWORD)
    assert add.exit_code == 0, add.output
    key = watcher.data_dir / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert watcher.cli("registry", "test", "r1").exit_code == 0  # the same key is read back


def use_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset WATCHER_SECRET_KEY: the data dir's secret.key is then the key."""
    from watcher.settings import get_settings

    monkeypatch.delenv("WATCHER_SECRET_KEY")
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "content",
    ["", "\n\n", Fernet.generate_key().decode()[:30], "not a key at all, just some text"],
    ids=["empty", "blank-lines", "truncated-key", "text"],
)
def test_an_empty_or_damaged_key_file_is_refused(
    watcher: Watcher, basic_registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    use_key_file(monkeypatch)
    watcher.data_dir.mkdir(parents=True, exist_ok=True)
    (watcher.data_dir / "secret.key").write_text(content)
    result = watcher.add_registry("r1", basic_registry.url, "--username", "alice", "--password", PASSWORD)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "secret.key" in result.stderr, result.stderr
    assert "move it away to have a new key generated" in result.stderr
    assert (watcher.data_dir / "secret.key").read_text() == content  # never replaced behind the user's back
    assert "no registries" in watcher.cli("registry", "list").stdout  # nothing saved


def test_a_key_file_emptied_later_is_refused_when_credentials_are_read(
    watcher: Watcher, basic_registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key_file(monkeypatch)
    assert watcher.add_registry("r1", basic_registry.url, "--username", "alice", "--password", PASSWORD).exit_code == 0
    (watcher.data_dir / "secret.key").write_text("")
    result = watcher.cli("registry", "test", "r1")
    assert result.exit_code == 1 and "is empty" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("key", ["k3y", "fifteen-chars-x", "     k3y-padded      "])
def test_a_short_passphrase_is_refused(
    watcher: Watcher, basic_registry: RegistryEnv, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    from watcher.settings import get_settings

    monkeypatch.setenv("WATCHER_SECRET_KEY", key)
    get_settings.cache_clear()
    result = watcher.add_registry("r1", basic_registry.url, "--username", "alice", "--password", PASSWORD)
    assert result.exit_code == 1
    assert result.stderr.startswith("watcher: WATCHER_SECRET_KEY is too short") and "at least 16" in result.stderr
    assert result.stderr.count("\n") == 1 and key.strip() not in result.stderr
    assert "no registries" in watcher.cli("registry", "list").stdout


def test_processes_generating_the_key_at_once_agree_on_one(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    use_key_file(monkeypatch)
    with ThreadPoolExecutor(8) as pool:
        rings = list(pool.map(lambda _: vault.keyring(), range(8)))
    assert all(ring.materials == rings[0].materials for ring in rings)  # no one read a half-written file
    key = watcher.data_dir / "secret.key"
    assert len(key.read_text().split()) == 1 and key.stat().st_mode & 0o777 == 0o600
    assert watcher.data_dir.stat().st_mode & 0o777 == 0o700
    assert not [p for p in watcher.data_dir.iterdir() if p.name != "secret.key"]  # no temporary file left


OTHER_KEY = "a key nobody configured here, long enough"


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_one_undecryptable_registry_does_not_break_the_others(
    watcher: Watcher, basic_registry: RegistryEnv, unique_repo: str, tmp_path: Path
) -> None:
    basic_registry.client.push_image(f"{unique_repo}/app", "v1")
    for name in ("a-good", "b-lost", "c-good"):
        added = watcher.add_registry(
            name, basic_registry.url, "--username", "alice", "--password", PASSWORD, "--repository", f"{unique_repo}/*"
        )
        assert added.exit_code == 0, added.output
    lost = vault.encrypt({"username": "alice", "password": PASSWORD}, vault.Keyring((OTHER_KEY,)))
    with session_scope() as session:
        session.execute(update(Registry).where(Registry.name == "b-lost").values(credentials=lost))

    listed = watcher.cli("registry", "list")
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.stdout for name in ("a-good", "b-lost", "c-good"))
    as_json = watcher.cli("registry", "list", "--json")
    credentials = {r["name"]: r["credentials"] for r in json.loads(as_json.stdout)}
    assert credentials["a-good"] == credentials["c-good"] == {"password": "set", "username": "alice"}
    assert credentials["b-lost"].startswith("cannot be decrypted: ")
    shown = watcher.cli("registry", "show", "b-lost")
    assert shown.exit_code == 0 and "credentials: cannot be decrypted: " in shown.stdout

    failed = watcher.cli("poll", "b-lost")
    assert failed.exit_code == 1
    assert failed.stderr.startswith("watcher: registry 'b-lost': credentials cannot be decrypted: ")
    assert failed.stderr.count("\n") == 1
    assert watcher.cli("poll", "a-good").exit_code == 0
    assert watcher.cli("poll", "c-good").exit_code == 0
    for result in (listed, as_json, shown, failed):
        assert PASSWORD not in result.output and OTHER_KEY not in result.output

    # The way out the message gives: re-enter the credentials with `registry apply`.
    entry: dict[str, Any] = {"name": "b-lost", "provider": "oci", "url": basic_registry.url}
    entry |= {"username": "alice", "password": PASSWORD, "repositories": [f"{unique_repo}/*"]}
    path = tmp_path / "lost.yaml"
    path.write_text(yaml.safe_dump({"registries": [entry]}))
    applied = watcher.cli("registry", "apply", "-f", str(path))
    assert applied.stdout == "updated registry 'b-lost'\n", applied.output
    assert watcher.cli("poll", "b-lost").exit_code == 0
