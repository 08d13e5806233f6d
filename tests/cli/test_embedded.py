"""Embedded defaults: with nothing configured, the watcher runs on SQLite and a bundled Redis server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from tests.support.fixtures import RegistryEnv
from tests.support.registry import free_port


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def add_local(cwd: Path, registry: RegistryEnv, scope: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        cwd,
        "registry",
        "add",
        "local",
        "--provider",
        "oci",
        "--url",
        registry.url,
        "--repository",
        f"{scope}/*",
        *extra,
    )


def test_poll_on_embedded_defaults_persists_the_stream(tmp_path: Path, registry: RegistryEnv, unique_repo: str) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    added = add_local(tmp_path, registry, unique_repo)
    assert added.returncode == 0, added.stderr
    assert run(tmp_path, "poll", "local").returncode == 0
    registry.client.push_image(f"{unique_repo}/app", "v2")
    polled = run(tmp_path, "poll", "local")
    assert polled.returncode == 0, polled.stderr
    assert "1 events" in polled.stdout

    data = tmp_path / ".watcher"
    assert (data / "watcher.db").exists() and (data / "appendonly.aof").exists()
    assert not answers(data / "redis.sock"), "the embedded Redis outlived the command that started it"

    # A later process finds the event on the stream the embedded server persisted.
    tail = run(tmp_path, "events", "--json")
    assert tail.returncode == 0 and '"tag": "v2"' in tail.stdout
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from watcher import bus; c = bus.connect(); print([f['tag'] for _, f in c.xrange('watcher:events')])",
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.strip() == "['v2']", check.stderr


@contextmanager
def embedded_run(cwd: Path) -> Iterator[tuple[int, Path]]:
    """`watcher run` on the embedded defaults in `cwd`, serving on a free port: (port, its log), stopped
    with SIGTERM at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")} | {
        "WATCHER_LISTEN": f"127.0.0.1:{port}"
    }
    log = cwd / "run.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--concurrency", "1"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield port, log
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)


def test_run_on_embedded_defaults_polls_and_stops_its_redis(
    tmp_path: Path, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    added = add_local(tmp_path, registry, unique_repo, "--interval", "10s")
    assert added.returncode == 0, added.stderr
    with embedded_run(tmp_path) as (port, log):
        baseline = re.compile(r"polled in [\d.]+s: 1 repositories, 1 tags, 0 events, \d+ requests \(baseline\)")
        deadline = time.monotonic() + 90
        while not baseline.search(log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert baseline.search(log.read_text()), log.read_text()[-2000:]
        token_file = tmp_path / ".watcher" / "admin.token"
        assert f"console and API at http://127.0.0.1:{port}/console/" in log.read_text()
        assert str(token_file) in log.read_text() and token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert token not in log.read_text()
        listed = httpx.get(f"http://127.0.0.1:{port}/api/v1/registries", headers={"Authorization": f"Bearer {token}"})
        assert [r["status"]["state"] for r in listed.json()["items"]] == ["ok"]
    assert not answers(tmp_path / ".watcher" / "redis.sock"), "watcher run left its embedded Redis running"


def answers(sock: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=2).ping())
    except (redis.ConnectionError, FileNotFoundError):
        return False


def test_the_first_start_of_run_shows_where_the_console_and_token_are_without_alembics_chatter(
    tmp_path: Path,
) -> None:
    """A newcomer's first screen: a new data dir is migrated without Alembic's INFO lines."""
    with embedded_run(tmp_path) as (port, log):
        deadline = time.monotonic() + 60
        while "console and API at" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert f"console and API at http://127.0.0.1:{port}/console/" in text and "admin.token" in text, text[-2000:]
        assert "alembic" not in text, text
    # stopped while its worker was still starting, it stops the Redis it started all the same
    assert not answers(tmp_path / ".watcher" / "redis.sock"), "watcher run left its embedded Redis running"
