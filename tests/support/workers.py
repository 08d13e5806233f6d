"""Real Celery workers for tests: `watcher run` subprocesses sharing the test's installation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import stop_process

__all__ = ["start_worker"]


@pytest.fixture
def start_worker(watcher: Any, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`start_worker(name, concurrency=2)` starts `watcher run` (a worker with its beat), logging to
    `tmp_path/NAME.log`; every worker started is stopped when the test ends."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--concurrency", str(concurrency), "--loglevel", "INFO"],
            env=watcher.env(),  # every worker shares the one installation: data dir, database, Redis
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test may kill the worker and its children
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc, timeout=20)


def ready(log: Path) -> bool:
    """Whether the worker logging to `log` is ready to take tasks (Celery says so)."""
    return log.exists() and "ready." in log.read_text()
