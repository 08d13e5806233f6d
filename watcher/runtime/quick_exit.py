"""Ending a one-shot command without the interpreter's teardown.

Once a command has done its work, CPython's own exit still clears every module it imported and collects
what they held: SQLAlchemy, httpx and redis-py leave a few hundred thousand objects, and tearing them down
cost `watcher status` and `watcher poll` tens of milliseconds of CPU after their output was written
(`benchmarks/command_speed.py`, `benchmarks/poll_speed.py --command`). `exit_now` does what that exit does
which anyone can see (the exit functions, among them the embedded Redis's stop and logging's flush; the
database connections closed with a goodbye to the server; stdout and stderr flushed) and then ends the
process with `os._exit`, skipping only the teardown of memory the kernel takes back anyway.

It falls back to the ordinary exit while another non-daemon thread is alive (the ordinary exit waits for
it), and is only for a process of its own: the `watcher` command's entry point, never a caller that
imported the CLI (a test's CliRunner).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_code(code: str | int | None) -> int:
    """The status `sys.exit(code)` ends a process with (a message is printed to stderr, as it would be)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: str | int | None) -> NoReturn:
    """End this process with `code`'s status, as `sys.exit(code)` would, without the module teardown."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # the ordinary exit waits for them
    status = exit_code(code)
    atexit._run_exitfuncs()  # what `atexit` registered, in its order: logging's flush among them
    _close_databases()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: CPython's exit says so with status 120
            status = status or 120
    os._exit(status)


def _close_databases() -> None:
    """The engines' pooled connections closed properly (PostgreSQL logs a dropped one), if any were made."""
    db = sys.modules.get("watcher.db")
    if db is not None:
        db.dispose_engines()
