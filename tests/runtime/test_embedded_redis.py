"""The embedded Redis is stopped by the process that started it, and by no process forked from it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.test_embedded import answers
from watcher import bus
from watcher.settings import Settings


def test_a_process_forked_from_the_starter_leaves_the_embedded_redis_running(tmp_path: Path) -> None:
    """Celery's beat and pool are forked from `watcher run`: exiting, they must not take the server from it."""
    settings = Settings(data_dir=tmp_path / ".watcher", redis_url=bus.EMBEDDED)
    sock = bus.socket_path(settings)
    bus.ensure_embedded(settings)
    try:
        starter = bus.connect(settings)  # named as the starter names its connections, as its children's are
        assert starter.ping()
        child = os.fork()
        if child == 0:  # what a forked process's exit runs
            try:
                bus.stop_started(only_if_alone=True)
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert starter.ping(), "a process forked from the starter shut the embedded Redis down"
    finally:
        bus.stop_started(only_if_alone=False)
    assert not answers(sock), "the starter did not stop its embedded Redis"
