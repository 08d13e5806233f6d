"""The CLI's own inputs and configuration: every failure is one line and a non-zero exit, never a traceback,
never a password from a URL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Watcher
from tests.support.registry import free_port
from watcher.db import get_engine
from watcher.settings import get_settings

PASSWORD_IN_URL = "hunter2-in-url"


def one_line(result, *needles: str, code: int | None = None) -> str:
    assert result.exit_code != 0 if code is None else result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("watcher: "), result.stderr
    assert "Traceback" not in result.output and PASSWORD_IN_URL not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


Configure = Callable[..., None]


@pytest.fixture
def configure(watcher: Watcher) -> Iterator[Configure]:
    """Set WATCHER_* variables for this test; undone before the `watcher` fixture cleans up."""
    with pytest.MonkeyPatch.context() as patch:

        def set_env(**env: str) -> None:
            for key, value in env.items():
                patch.setenv(f"WATCHER_{key.upper()}", value)
            get_settings.cache_clear()
            get_engine.cache_clear()

        yield set_env
    get_settings.cache_clear()
    get_engine.cache_clear()


def test_events_tail_with_redis_down_is_one_line(watcher: Watcher, configure: Configure) -> None:
    port = free_port()
    configure(redis_url=f"redis://:{PASSWORD_IN_URL}@127.0.0.1:{port}/0")
    line = one_line(watcher.cli("events", "tail", "--count", "1"), "cannot reach Redis", f"127.0.0.1:{port}")
    assert ":***@" in line
    one_line(watcher.cli("events", "tail", "--group", "g", "--count", "1"), "cannot reach Redis")
    assert watcher.cli("events").exit_code == 0  # the history is in the database: no Redis needed


def test_events_tail_with_redis_down_in_a_real_process(watcher: Watcher, configure: Configure) -> None:
    configure(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "events", "tail"],
        env=watcher.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot reach Redis" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["events", "--limit", "1e20"], "--limit"),
        (["events", "--limit", str(10**20)], "1<=x<=10000"),
        (["events", "--limit", "10001"], "--limit"),
        (["events", "tail", "--claim-idle", "-1"], "--claim-idle"),
        (["events", "tail", "--claim-idle", str(10**20)], "--claim-idle"),
        (["events", "tail", "--count", "0"], "--count"),
        (["events", "--since", "yesterday"], "--since"),
    ],
)
def test_bounded_event_options(watcher: Watcher, args: list[str], needle: str) -> None:
    one_line(watcher.cli(*args), needle)


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"database_url": f"mysql://u:{PASSWORD_IN_URL}@127.0.0.1/db"}, ["'mysql' databases are not supported"]),
        ({"database_url": "oracle://h/db"}, ["'oracle' databases are not supported", "postgresql://"]),
        ({"database_url": "not a url"}, ["WATCHER_DATABASE_URL", "not a valid URL"]),
        ({"database_url": f"postgresql://u:{PASSWORD_IN_URL}@127.0.0.1:abc/db"}, ["not a valid URL", "u:***@"]),
        ({"database_url": "postgresql://u@127.0.0.1:99999/db"}, ["port 99999 is out of range"]),
        ({"redis_url": f"redis://:{PASSWORD_IN_URL}@127.0.0.1:abc/0"}, ["WATCHER_REDIS_URL", "Port could not be cast"]),
        ({"redis_url": "redis://127.0.0.1:99999/0"}, ["WATCHER_REDIS_URL", "Port out of range"]),
        ({"redis_url": "http://127.0.0.1/0"}, ["WATCHER_REDIS_URL", "use embedded, redis://"]),
        ({"events_maxlen": "lots"}, ["WATCHER_EVENTS_MAXLEN is not valid", "integer"]),
        ({"min_interval_seconds": "1e999"}, ["WATCHER_MIN_INTERVAL_SECONDS is not valid"]),
    ],
)
@pytest.mark.parametrize("command", [["registry", "list"], ["events"], ["events", "tail"]])
def test_bad_configuration_is_one_line(
    watcher: Watcher, configure: Configure, env: dict[str, str], needles: list[str], command: list[str]
) -> None:
    configure(**env)
    one_line(watcher.cli(*command), *needles, code=1)


def test_an_unwritable_sqlite_path_is_one_line(watcher: Watcher, configure: Configure, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    configure(database_url=f"sqlite:///{blocker}/sub/watcher.db")
    one_line(watcher.cli("registry", "list"), "cannot use", str(blocker), "WATCHER_DATABASE_URL", code=1)


def test_an_unexpected_failure_is_one_masked_line(watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"boom at postgresql://u:{PASSWORD_IN_URL}@h/db key={watcher.settings.secret_key}\nmore")

    monkeypatch.setattr("watcher.outbox.history.recent_events", explode)
    line = one_line(watcher.cli("events"), "internal error: RuntimeError: boom at postgresql://u:***@h/db", code=1)
    assert line.endswith("(set WATCHER_DEBUG=1 for the traceback)") and "more" not in line
    assert watcher.settings.secret_key not in line
    monkeypatch.setenv("WATCHER_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        watcher.cli("events")
