"""The settings read without pydantic-settings (the quick path) are the ones pydantic-settings reads, and
whatever the quick path cannot vouch for goes to pydantic-settings: same values, same one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.settings import DEFAULTS, Settings, SettingsError, get_settings, plain_settings, validated_settings


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WATCHER_* variable of the test run, and a working directory without a `.env`."""
    for key in list(os.environ):
        if key.lower().startswith("watcher_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


def test_defaults_are_the_same() -> None:
    assert plain_settings() == validated_settings() == Settings()


def test_plain_values_are_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    given_values = {
        "WATCHER_DATA_DIR": "/srv/watcher data",
        "WATCHER_DATABASE_URL": "postgresql://w:p@db:5432/w",
        "WATCHER_EVENTS_MAXLEN": "-3",
        "watcher_max_pages": "42",  # any spelling of the name, as pydantic-settings reads it
        "WATCHER_LISTEN": " 0.0.0.0:80 ",  # a string is kept as given
        "WATCHER_UNKNOWN": "ignored",
        "WATCHER_DEBUG": "1",
    }
    for key, value in given_values.items():
        monkeypatch.setenv(key, value)
    plain = plain_settings()
    assert plain is not None
    assert plain == validated_settings()
    assert (plain.data_dir, plain.events_maxlen, plain.max_pages, plain.listen) == (
        Path("/srv/watcher data"),
        -3,
        42,
        " 0.0.0.0:80 ",
    )
    assert get_settings() == plain


@pytest.mark.parametrize("value", [" 42 ", "1_000", "42.0", "+7"])
def test_an_integer_in_another_form_goes_to_pydantic(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WATCHER_MAX_PAGES", value)
    assert plain_settings() is None
    assert get_settings().max_pages == int(float(value.replace("_", "")))


@pytest.mark.parametrize("value", ["", "ten", "0x10", "4e2"])
def test_an_invalid_integer_is_pydantics_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith("WATCHER_POLL_LEASE_SECONDS is not valid: Input should be a valid integer")
    assert message.endswith(": fix or unset it") and "\n" not in message
    assert value not in message or not value


def test_a_dotenv_file_is_read_by_pydantic_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('WATCHER_EVENTS_STREAM="from-dotenv"\nWATCHER_MAX_PAGES=5\nOTHER=1\n')
    monkeypatch.setenv("WATCHER_MAX_PAGES", "6")  # the environment wins over the file
    assert plain_settings() is None
    read = get_settings()
    assert (read.events_stream, read.max_pages) == ("from-dotenv", 6)


def test_two_spellings_of_one_setting_go_to_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_LISTEN", "a:1")
    monkeypatch.setenv("watcher_listen", "b:2")
    assert plain_settings() is None
    assert get_settings().listen in ("a:1", "b:2")


INTEGERS = [name for name, default in DEFAULTS.items() if isinstance(default, int)]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(INTEGERS), value=st.text(alphabet="0123456789 -+_.xe٣a", max_size=8))
def test_any_integer_text_reads_as_pydantic_reads_it(name: str, value: str) -> None:
    os.environ[f"WATCHER_{name.upper()}"] = value
    try:
        plain = plain_settings()
        try:
            expected: Settings | str = validated_settings()
        except SettingsError as exc:
            expected = str(exc)
        assert plain is None or plain == expected
    finally:
        del os.environ[f"WATCHER_{name.upper()}"]
