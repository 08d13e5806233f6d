"""`watcher.runtime.quick_exit`: the `watcher` process ends without the interpreter's module teardown, and
with everything else an ordinary exit does (its status, its output, the exit functions, threads still at
work, the database connections closed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from tests.support.sitecustom import sitecustomize_path
from watcher import db

#: a sitecustomize whose object says so when the interpreter's teardown clears the module holding it
WITNESS = """
import os

class _Witness:
    def __del__(self, write=os.write):
        write(2, b"torn down\\n")

witness = _Witness()
"""


def run_python(args: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": sitecustomize_path(tmp_path, WITNESS, os.environ.get("PYTHONPATH"))}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_witness_sees_an_ordinary_exit(tmp_path: Path) -> None:
    """The control: without the quick exit, the teardown runs and the witness says so."""
    done = run_python(["-c", "print('hello')"], tmp_path)
    assert done.stdout == "hello\n"
    assert "torn down" in done.stderr


@pytest.mark.parametrize(
    ("args", "status", "out", "err"),
    [
        (["--help"], 0, "Usage:", ""),
        (["no-such-command"], 2, "", "watcher: No such command 'no-such-command'"),
    ],
)
def test_the_watcher_command_ends_without_tearing_down_its_modules(
    tmp_path: Path, args: list[str], status: int, out: str, err: str
) -> None:
    done = run_python(["-m", "watcher", *args], tmp_path)
    assert done.returncode == status
    assert out in done.stdout
    assert err in done.stderr
    assert "torn down" not in done.stderr


EXITS = """
import atexit, sys, threading, time
from watcher.runtime.quick_exit import exit_now

atexit.register(lambda: print("exit function ran", flush=True))
mode = sys.argv[1]
if mode == "output":
    sys.stdout.write("x" * 1_000_000 + "\\n")  # still in the buffer when the process ends
    exit_now(3)
elif mode == "message":
    exit_now("something is wrong")
elif mode == "thread":
    def late():
        time.sleep(0.3)
        print("the thread finished", flush=True)
    threading.Thread(target=late).start()
    exit_now(0)
"""


def test_buffered_output_and_exit_functions_survive_the_quick_exit(tmp_path: Path) -> None:
    done = run_python(["-c", EXITS, "output"], tmp_path)
    assert done.returncode == 3
    lines = done.stdout.splitlines()
    assert lines == ["x" * 1_000_000, "exit function ran"]
    assert "torn down" not in done.stderr


def test_a_message_is_printed_and_ends_with_status_1_as_sys_exit_does(tmp_path: Path) -> None:
    done = run_python(["-c", EXITS, "message"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "something is wrong"


def test_a_thread_still_at_work_is_waited_for_by_the_ordinary_exit(tmp_path: Path) -> None:
    done = run_python(["-c", EXITS, "thread"], tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["the thread finished", "exit function ran"]
    assert "torn down" in done.stderr  # the ordinary exit, which waits for threads


def test_disposing_the_engines_closes_their_pooled_connections(tmp_path: Path) -> None:
    engine = db._make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.connect() as conn:
        conn.execute(text("select 1"))
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 1  # kept in the pool after use
    db.dispose_engines()
    assert pool.checkedin() == 0


def test_the_installed_command_is_the_entry_that_exits_quickly() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="watcher")
    assert script.value == "watcher.cli.main:entry"
