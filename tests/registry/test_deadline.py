"""The bounded runner: a deadline or a stop request ends the work at once, even while a blocking call
(boto3, the Azure SDK) is stuck in a thread — neither the loop nor the interpreter waits for that thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from watcher.registry.deadline import DeadlineExceeded, Interrupted, run_bounded


async def blocked_in_a_thread() -> None:
    await asyncio.to_thread(time.sleep, 60)


def test_the_deadline_ends_work_blocked_in_a_thread() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="over half a second"):
        run_bounded(blocked_in_a_thread, seconds=0.5, stop=threading.Event(), deadline_message="over half a second")
    assert time.monotonic() - started < 5


def test_a_stop_request_ends_work_blocked_in_a_thread() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        run_bounded(blocked_in_a_thread, seconds=60, stop=stop, deadline_message="")
    assert time.monotonic() - started < 5


def test_work_that_finishes_in_time_returns_its_result() -> None:
    async def quick() -> int:
        return await asyncio.to_thread(lambda: 42)

    assert run_bounded(quick, seconds=5, stop=threading.Event(), deadline_message="") == 42


def test_a_process_whose_work_timed_out_exits_without_waiting_for_the_blocked_thread() -> None:
    script = textwrap.dedent(
        """
        import asyncio, threading, time
        from watcher.registry.deadline import DeadlineExceeded, run_bounded

        async def work():
            await asyncio.to_thread(time.sleep, 60)

        try:
            run_bounded(work, seconds=0.5, stop=threading.Event(), deadline_message="late")
        except DeadlineExceeded as exc:
            print(exc)
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 15  # not the 60 s the thread sleeps
    assert done.stdout.strip() == "too slow: late" and done.stderr == ""
