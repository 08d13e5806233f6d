"""Credentials: read from a value, a file or stdin; encrypted at rest; never shown anywhere."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, RegistryEnv


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
