"""`watcher registry webhook NAME`: a secret made once (rotated on request), stored encrypted, the URL and
the registry-side set-up printed; a disabled receiver keeps its secret."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import select

from tests.conftest import Watcher
from watcher.db import session_scope
from watcher.hooks.formats import FORMATS
from watcher.hooks.receivers import DEFAULT_FORMATS
from watcher.models import Registry
from watcher.pollers import PROVIDER_NAMES
from watcher.settings import get_settings


def hook_json(watcher: Watcher, *extra: str) -> dict[str, object]:
    result = watcher.cli("registry", "webhook", "r1", "--json", *extra)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


@pytest.fixture
def r1(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> Watcher:
    monkeypatch.setenv("WATCHER_PUBLIC_URL", "https://watcher.example.com/")
    get_settings.cache_clear()
    assert watcher.add_registry("r1", "https://r1.example.com", "--no-verify").exit_code == 0
    return watcher


def test_enabling_makes_one_secret_stored_encrypted_and_shows_it_again(r1: Watcher) -> None:
    first = hook_json(r1)
    assert set(first) == {"url", "secret", "format", "enabled"}
    assert first["url"] == "https://watcher.example.com/hooks/v1/r1"
    assert first["format"] == "distribution" and first["enabled"] is True
    secret = str(first["secret"])
    assert len(secret) >= 43 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    with session_scope(r1.engine) as session:
        stored = session.scalar(select(Registry.webhook_secret).where(Registry.name == "r1"))
    assert stored and secret not in stored
    assert hook_json(r1) == first  # shown again, not replaced
    shown = r1.cli("registry", "show", "r1", "--json").output
    assert secret not in shown

    rotated = hook_json(r1, "--rotate")
    assert rotated["secret"] != secret and rotated["url"] == first["url"]
    disabled = hook_json(r1, "--disable")
    assert disabled["enabled"] is False and disabled["secret"] == rotated["secret"]
    assert hook_json(r1)["enabled"] is True


def test_the_text_output_is_the_distribution_notifications_snippet(r1: Watcher) -> None:
    result = r1.cli("registry", "webhook", "r1")
    assert result.exit_code == 0, result.output
    secret = hook_json(r1)["secret"]
    assert f"secret: {secret}" in result.output
    snippet = result.output.split("On the registry's side (distribution):\n", 1)[1]
    config = yaml.safe_load(snippet)
    (endpoint,) = config["notifications"]["endpoints"]
    assert endpoint["url"] == "https://watcher.example.com/hooks/v1/r1"
    assert endpoint["headers"] == {"Authorization": [f"Bearer {secret}"]}
    assert endpoint["ignore"] == {"mediatypes": ["application/octet-stream"], "actions": ["pull"]}


def test_the_url_defaults_to_the_listen_address(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_LISTEN", "127.0.0.1:9999")
    get_settings.cache_clear()
    assert watcher.add_registry("r1", "https://r1.example.com", "--no-verify").exit_code == 0
    assert hook_json(watcher)["url"] == "http://127.0.0.1:9999/hooks/v1/r1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("r1", "--format", "smoke-signals"), "--format 'smoke-signals' is not a webhook format"),
        (("nope",), "no registry named 'nope'"),
    ],
)
def test_what_cannot_be_done_is_one_line(r1: Watcher, args: tuple[str, ...], message: str) -> None:
    result = r1.cli("registry", "webhook", *args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    with session_scope(r1.engine) as session:
        assert session.scalar(select(Registry.webhook_enabled).where(Registry.name == "r1")) is False


def test_every_providers_default_format_is_received() -> None:
    """What `--format` defaults to is a format the receiver reads, for every provider: no registry can be
    set up for a format that is not received."""
    assert {DEFAULT_FORMATS[provider] for provider in PROVIDER_NAMES} <= set(FORMATS)


def test_an_unknown_format_names_every_received_one(r1: Watcher) -> None:
    result = r1.cli("registry", "webhook", "r1", "--format", "smoke-signals")
    assert result.exit_code == 1
    assert result.output.strip().endswith(f"use one of {', '.join(FORMATS)}")


def test_a_key_rotation_re_encrypts_the_webhook_secret(r1: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = hook_json(r1)["secret"]
    old_key = r1.settings.secret_key
    monkeypatch.setenv("WATCHER_SECRET_KEY", "the-new-passphrase-of-the-operator")
    monkeypatch.setenv("WATCHER_SECRET_KEY_FALLBACKS", old_key)
    get_settings.cache_clear()
    rotated = r1.cli("secrets", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert "re-encrypted 1 registries" in rotated.output and str(secret) not in rotated.output
    monkeypatch.delenv("WATCHER_SECRET_KEY_FALLBACKS")
    get_settings.cache_clear()
    assert hook_json(r1)["secret"] == secret  # readable under the new key alone
