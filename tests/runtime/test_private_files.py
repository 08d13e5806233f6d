"""Files the watcher creates are 0600 in a 0700 data dir, on the embedded defaults."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.cli.test_embedded import add_local, run
from tests.support.fixtures import PASSWORD, RegistryEnv
from watcher import bus
from watcher.db import get_engine
from watcher.settings import get_settings


def modes(data: Path) -> dict[str, int]:
    """Each path under `data` (and `data` itself), relative to its parent: its type and permission bits."""
    return {str(p.relative_to(data.parent)): p.lstat().st_mode for p in [data, *data.rglob("*")]}


def test_every_file_in_the_data_dir_is_private(
    tmp_path: Path, basic_registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / ".watcher"
    data.mkdir()
    os.chmod(data, 0o755)  # made by hand, or by an older version: the watcher narrows it
    basic_registry.client.push_image(f"{unique_repo}/app", "v1")
    added = add_local(tmp_path, basic_registry, unique_repo, "--username", "alice", "--password", PASSWORD)
    assert added.returncode == 0, added.stderr
    polled = run(tmp_path, "poll", "local")
    assert polled.returncode == 0, polled.stderr

    # While a writer holds the database open (its -wal and -shm exist) and the embedded Redis runs (its pid
    # file and socket exist, and a snapshot was just saved), every file is the owner's alone.
    for name in [k for k in os.environ if k.startswith("WATCHER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WATCHER_DATA_DIR", str(data))
    get_settings.cache_clear()
    get_engine.cache_clear()
    deadline = time.monotonic() + 30
    while (data / "redis.pid").exists():  # the server `poll` stopped is still on its way out
        assert time.monotonic() < deadline, "the embedded Redis of `watcher poll` did not exit"
        time.sleep(0.05)
    try:
        with get_engine().begin() as conn:
            conn.execute(text("UPDATE registries SET interval_seconds = interval_seconds"))
            client = bus.connect()
            client.save()
            seen = modes(data)
    finally:
        bus.stop_started(only_if_alone=False)
        get_engine().dispose()
        get_engine.cache_clear()
        get_settings.cache_clear()

    expected = {"secret.key", "watcher.db", "watcher.db-wal", "watcher.db-shm", "watcher.db.lock"}
    expected |= {"redis.conf", "redis.log", "redis.pid", "appendonly.aof", "dump.rdb", "redis.sock"}
    assert {Path(p).name for p in seen} >= expected | {".watcher"}
    for path, st_mode in seen.items():
        kind, mode = stat.S_IFMT(st_mode), stat.S_IMODE(st_mode)
        if kind == stat.S_IFDIR:
            assert mode == 0o700, f"{path} is {mode:o}"
        elif kind == stat.S_IFREG:
            assert mode == 0o600, f"{path} is {mode:o}"
        else:  # the Redis socket
            assert mode & 0o077 == 0, f"{path} is {mode:o}"
