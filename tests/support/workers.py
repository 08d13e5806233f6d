"""Real Celery workers for tests: `watcher run` subprocesses sharing the test's installation."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["start_worker", "worker_queue"]


@pytest.fixture
def start_worker(watcher: Any, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`start_worker(name, concurrency=2, env=None)` starts `watcher run` (a worker with its beat), logging to
    `tmp_path/NAME.log`, with `env` over the installation's environment; every worker started is stopped
    when the test ends."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, concurrency: int = 2, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--concurrency", str(concurrency), "--loglevel", "INFO"],
            env=watcher.env() | (env or {}),  # every worker shares the one installation: data dir, database, Redis
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test may kill the worker and its children
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:  # killed outright, with its pool and beat: a test that needs a clean stop asks for one
        with contextlib.suppress(ProcessLookupError):  # a warm shutdown takes Celery ~5 s: nothing reads it here
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def worker_queue(watcher: Any) -> Iterator[str]:
    """The Celery queue's key, as this installation's workers read it, emptied before and after; tasks
    this process sends go there too. The app's key prefix is fixed when it is first imported, maybe by an
    earlier test of another installation: it is pointed at this one's for the test, then back."""
    from watcher.tasks import app

    def use(options: dict[str, Any]) -> None:
        app.conf.broker_transport_options = options
        app._pool = None  # made again, under these options (kombu keeps one pool per options: none is closed)
        app.amqp._producer_pool = None

    before = dict(app.conf.broker_transport_options)
    prefix = f"{watcher.stream}:celery:"
    use({**before, "global_keyprefix": prefix})
    watcher.redis.delete(f"{prefix}celery")
    yield f"{prefix}celery"
    watcher.redis.delete(f"{prefix}celery")
    use(before)


def ready(log: Path) -> bool:
    """Whether the worker logging to `log` is ready to take tasks (Celery says so)."""
    return log.exists() and "ready." in log.read_text()
