"""`watcher run`: Celery beat really dispatches polls, and several workers poll each registry once per slot."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.processes import stop_process
from watcher.models import PollRun


@pytest.fixture
def start_worker(watcher: Watcher, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--concurrency", "2", "--loglevel", "INFO"],
            env=watcher.env(),  # every worker shares the one installation: data dir, database, Redis
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc, timeout=20)


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def poll_runs(watcher: Watcher) -> list[PollRun]:
    with watcher.engine.connect() as conn:
        return list(conn.execute(select(PollRun).order_by(PollRun.id)))  # type: ignore[arg-type]


def test_beat_dispatches_polls_and_events_reach_the_stream(
    watcher: Watcher, registry, unique_repo: str, start_worker
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    add = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*", "--interval", "2s")
    assert add.exit_code == 0, add.output
    start_worker("w1")
    assert wait_for(lambda: any(r.outcome == "ok" for r in poll_runs(watcher)), 60), "no poll was dispatched"
    registry.client.push_image(f"{unique_repo}/app", "v2")
    assert wait_for(lambda: [e["tag"] for e in watcher.stream_entries()] == ["v2"], 30), watcher.stream_entries()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_two_workers_poll_each_registry_once_per_interval(
    watcher: Watcher, registry, unique_repo: str, start_worker
) -> None:
    interval = 3
    for name in ("a", "b"):
        registry.client.push_image(f"{unique_repo}/{name}/app", "v1")
        add = watcher.add_registry(
            name, registry.url, "--repository", f"{unique_repo}/{name}/*", "--interval", f"{interval}s"
        )
        assert add.exit_code == 0, add.output
    start_worker("w1")
    start_worker("w2")  # each runs its own beat: both tick, each slot is still dispatched once
    assert wait_for(lambda: len(poll_runs(watcher)) >= 2, 60), "no poll was dispatched"
    first = min(r.started_at for r in poll_runs(watcher))
    time.sleep(4 * interval)
    runs = [r for r in poll_runs(watcher) if r.started_at >= first]
    elapsed = max(r.started_at for r in runs) - first
    for registry_id in {r.registry_id for r in runs}:
        mine = sorted(r.started_at for r in runs if r.registry_id == registry_id)
        assert len(mine) >= 3, mine  # the workers kept polling...
        assert len(mine) <= elapsed.total_seconds() / interval + 2, mine  # ...but once per slot, not once per worker
        assert all(r.outcome == "ok" for r in runs if r.registry_id == registry_id)
