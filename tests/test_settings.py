"""WATCHER_* settings: the environment, then `.env`, then the defaults; a bad value is one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.settings import Settings, SettingsError


def test_defaults_without_any_variable(tmp_path: Path) -> None:
    settings = Settings.from_environment({"PATH": "/bin"}, tmp_path / ".env")
    assert settings == Settings()
    assert settings.effective_database_url == "sqlite:///.watcher/watcher.db"


def test_the_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "WATCHER_EVENTS_STREAM=from-file\n"
        "export WATCHER_EVENTS_MAXLEN='42'\n"
        "# WATCHER_LISTEN=commented-out\n"
        "OTHER_SETTING=ignored\n"
        "WATCHER_NOT_A_SETTING=ignored\n"
    )
    settings = Settings.from_environment({"WATCHER_EVENTS_STREAM": "from-env", "WATCHER_DATA_DIR": "/srv/w"}, env_file)
    assert settings.events_stream == "from-env"
    assert settings.events_maxlen == 42
    assert settings.listen == Settings.listen
    assert settings.data_dir == Path("/srv/w")
    assert settings.effective_database_url == "sqlite:////srv/w/watcher.db"


def test_names_match_in_any_case(tmp_path: Path) -> None:
    settings = Settings.from_environment({"watcher_redis_url": "redis://127.0.0.1:6379/1"}, tmp_path / ".env")
    assert settings.redis_url == "redis://127.0.0.1:6379/1"


@pytest.mark.parametrize("value", ["lots", "1e999", "", "4.5"])
def test_a_number_that_is_not_one_names_the_variable_not_the_value(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environment({"WATCHER_POLL_LEASE_SECONDS": value}, tmp_path / ".env")
    message = str(caught.value)
    assert message.startswith("WATCHER_POLL_LEASE_SECONDS is not valid") and "integer" in message
    assert not value or value not in message
