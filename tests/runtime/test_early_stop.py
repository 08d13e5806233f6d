"""`watcher.runtime.early_stop`: a SIGTERM whose SystemExit is lost (raised inside a weakref callback, where
the interpreter only prints it) still ends `watcher run`'s start at the next point that checks. The path
through Celery (the signal sent again once its handler is in place) is tested with a real worker in
tests/tasks/test_worker.py."""

from __future__ import annotations

import subprocess
import sys

from tests.support.signals import LOSE_A_SIGTERM

LOST_THEN_CHECKED = (
    LOSE_A_SIGTERM
    + """
from watcher.runtime import early_stop

early_stop.install()
lose_a_sigterm()
print("the start went on", flush=True)
early_stop.raise_if_requested()
print("and reached the worker", flush=True)
"""
)


def test_a_lost_exit_is_raised_again_before_the_worker_starts() -> None:
    done = subprocess.run([sys.executable, "-c", LOST_THEN_CHECKED], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in done.stderr  # the handler's SystemExit was lost, as meant
    assert done.stdout.splitlines() == ["the start went on"]
    assert done.returncode == 143
