"""`registry add` options are bounded: each bad value is one line naming the option and the bound."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from tests.conftest import Watcher
from watcher.models import Registry
from watcher.settings import get_settings

URL = "https://registry.example.com"


def refused(watcher: Watcher, *args: str, name: str = "r1") -> str:
    """`registry add` failed with one line on stderr, no traceback, and saved nothing; the line."""
    result = watcher.cli("registry", "add", name, "--provider", "oci", "--no-verify", *args)
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("watcher: "), result.stderr
    assert "Traceback" not in result.output
    with watcher.engine.connect() as conn:
        assert conn.scalar(select(func.count(Registry.id))) == 0
    return lines[0]


def added(watcher: Watcher, *args: str, name: str = "r1") -> dict:
    result = watcher.cli("registry", "add", name, "--provider", "oci", "--no-verify", *args)
    assert result.exit_code == 0, result.output
    return json.loads(watcher.cli("registry", "show", name, "--json").stdout)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--interval", "3000000d"], ["--interval", "out of range", "to 30d"]),
        (["--interval", "99999d"], ["--interval", "out of range", "30d"]),
        (["--interval", "31d"], ["--interval", "out of range"]),
        (["--interval", "9" * 5000], ["--interval", "not a duration"]),
        (["--interval", "-5m"], ["--interval", "not a duration"]),
        (["--poll-timeout", "25h"], ["--poll-timeout", "10s to 1d"]),
        (["--poll-timeout", "5s"], ["--poll-timeout", "out of range"]),
        (["--poll-timeout", "soon"], ["--poll-timeout", "not a duration"]),
        (["--max-concurrency", "0"], ["--max-concurrency", "from 1 to 64"]),
        (["--max-concurrency", "65"], ["--max-concurrency", "from 1 to 64"]),
        (["--max-concurrency", str(10**30)], ["--max-concurrency", "from 1 to 64"]),
        (["--rate-limit", "nan"], ["--rate-limit", "from 0.1 to 10,000"]),
        (["--rate-limit", "inf"], ["--rate-limit", "from 0.1 to 10,000"]),
        (["--rate-limit", "1e400"], ["--rate-limit", "from 0.1 to 10,000"]),
        (["--rate-limit", "0.01"], ["--rate-limit", "from 0.1 to 10,000"]),
        (["--rate-limit", "10001"], ["--rate-limit", "from 0.1 to 10,000"]),
        (["--include-tags", "x" * 2000], ["--include-tags", "too long"]),
        (["--repository", "/"], ["--repository", "must not be empty"]),
        (["--url", "http://[::1"], ["URL", "not valid"]),
        (["--url", "http://host:99999"], ["URL", "not valid"]),
        (["--url", "http://host:port"], ["URL", "not valid"]),
        (["--url", "http://bad host"], ["URL", "not valid"]),
        (["--url", "http://host:0"], ["no valid port"]),
    ],
)
def test_out_of_bounds_options_are_one_line(watcher: Watcher, args: list[str], needles: list[str]) -> None:
    line = refused(watcher, "--url", URL, *args) if "--url" not in args else refused(watcher, *args)
    assert line.startswith("watcher: registry 'r1': ")
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize("name", ["Upper", "_under", "a" * 64, "a b", "é", "a/b", ""])
def test_names_are_lower_case_and_short(watcher: Watcher, name: str) -> None:
    assert "registry name" in refused(watcher, "--url", URL, name=name)


@pytest.mark.parametrize(
    "url", ["http://user:s3cr3t-pw@registry.example.com", "https://:s3cr3t-pw@h", "ftp://u:s3cr3t-pw@h/x"]
)
def test_a_url_with_credentials_is_refused_without_echoing_them(watcher: Watcher, url: str) -> None:
    line = refused(watcher, "--url", url)
    assert "--username" in line and "--password" in line
    assert "s3cr3t-pw" not in line


def test_the_minimum_interval_is_the_setting(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_MIN_INTERVAL_SECONDS", "10")
    get_settings.cache_clear()
    assert "10s to 30d" in refused(watcher, "--url", URL, "--interval", "9s")
    assert added(watcher, "--url", URL, "--interval", "10s")["interval"] == "10s"


def test_bounds_themselves_are_accepted(watcher: Watcher) -> None:
    shown = added(
        watcher,
        "--url",
        "http://[::1]:5000",
        "--interval",
        "30d",
        "--max-concurrency",
        "64",
        "--rate-limit",
        "0.1",
        "--poll-timeout",
        "24h",
    )
    assert (shown["url"], shown["interval"]) == ("http://[::1]:5000", "30d")
    assert shown["options"] | {"repositories": []} == {
        "repositories": [],
        "max_concurrency": 64,
        "rate_limit": 0.1,
        "poll_timeout": 86400,
    }


def test_the_poll_timeout_defaults_to_ten_minutes(watcher: Watcher) -> None:
    assert added(watcher, "--url", URL)["options"]["poll_timeout"] == 600
    assert added(watcher, "--url", URL, "--poll-timeout", "90s", name="r2")["options"]["poll_timeout"] == 90


def test_a_secret_file_that_is_not_text_is_one_line(watcher: Watcher, tmp_path) -> None:
    binary = tmp_path / "key.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in refused(watcher, "--url", URL, "--username", "u", "--password", f"@{binary}")
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * (65 * 1024))
    assert "more than 64 KiB" in refused(watcher, "--url", URL, "--username", "u", "--password", f"@{huge}")


def test_values_of_is_the_inverse_of_build_spec() -> None:
    from watcher.registrations.forms import build_spec, values_of

    given = {
        "name": "r1",
        "provider": "oci",
        "url": "https://r.example.com",
        "interval": "2h",
        "poll_timeout": "5m",
        "username": "u",
        "password": "p",
        "repositories": ["team/*", "base"],
        "include_tags": "^v",
        "max_concurrency": 4,
        "rate_limit": 2.5,
        "emit_existing": True,
    }
    spec = build_spec(given, source="remote")
    assert build_spec(values_of(spec), source="remote") == spec
