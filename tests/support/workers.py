"""`watcher run` worker processes for tests: each shares the test's installation and is stopped at the end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Watcher
from tests.support.processes import stop_process


@pytest.fixture
def start_worker(watcher: Watcher, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """start_worker(name, concurrency): a `watcher run` logging to `tmp_path/NAME.log`, in its own process
    group (a test may kill the worker and its children)."""
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
