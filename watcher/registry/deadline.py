"""Running one poll's coroutine to a deadline and a stop request, on an event loop of its own (in a worker:
its thread's long-lived one, `thread_loop`).

Per-read timeouts never fire for a registry that sends a byte a second; only a deadline for the whole
operation does. Cancelling the coroutine is not enough on its own: boto3 and the Azure SDK block in
threads, and `asyncio.run` waits for those at its end (and the interpreter at exit). So the loop here runs
blocking calls on detached daemon threads it never waits for: a poll that gives up returns at once, and a
call still blocked finishes (or times out) on its own, harmlessly.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from watcher.errors import RegistryError, WatcherError
from watcher.registry import warm

T = TypeVar("T")
#: how often the stop request is looked at while the work runs
STOP_CHECK_SECONDS = 0.2
#: how long cancelled work may take to close its connections before it is left behind
CLEANUP_SECONDS = 2.0


class DeadlineExceeded(RegistryError):
    """The whole operation took longer than its deadline; nothing was saved."""

    cause = "too slow"


class Interrupted(WatcherError):
    """The process was asked to stop while the operation ran; it ended early and saved nothing."""


class DetachedExecutor(ThreadPoolExecutor):
    """Each blocking call gets a daemon thread of its own, which nobody joins: not the loop when it
    closes, not the interpreter when it exits. (asyncio requires a ThreadPoolExecutor, hence the base.)"""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def call() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to whoever awaits the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=call, name="watcher-blocking-call", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None  # the threads are detached on purpose


def run_bounded(
    work: Callable[[], Coroutine[Any, Any, T]],
    *,
    seconds: float,
    stop: threading.Event,
    deadline_message: str,
) -> T:
    """`work()` to completion, or DeadlineExceeded(deadline_message) after `seconds`, or Interrupted as
    soon as `stop` is set. Either way the work is cancelled and given a moment to close its connections."""
    kept = warm.enabled()
    loop = thread_loop() if kept else _new_loop()
    try:
        return loop.run_until_complete(_race(work(), seconds, stop, deadline_message))
    finally:
        try:
            _cancel_leftovers(loop)
            if not kept:
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            if not kept:
                loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(DetachedExecutor())
    return loop


_LOCAL = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for bounded work in a worker, made once and kept (not closed) between runs,
    so what lives on it stays warm for the next poll: connection pools, Redis connections (`watcher.registry.warm`).
    A process forked from one that had it makes its own."""
    kept: tuple[int, asyncio.AbstractEventLoop] | None = getattr(_LOCAL, "loop", None)
    if kept is not None and kept[0] == os.getpid() and not kept[1].is_closed():
        return kept[1]
    loop = _new_loop()
    _LOCAL.loop = (os.getpid(), loop)
    return loop


async def _race(work: Coroutine[Any, Any, T], seconds: float, stop: threading.Event, deadline_message: str) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    deadline = loop.time() + seconds
    while not task.done():
        if stop.is_set():
            reason: BaseException = Interrupted("poll interrupted: the process is stopping; nothing was saved")
        elif loop.time() >= deadline:
            reason = DeadlineExceeded(deadline_message)
        else:
            await asyncio.wait({task}, timeout=min(STOP_CHECK_SECONDS, deadline - loop.time()))
            continue
        task.cancel()
        await asyncio.wait({task}, timeout=CLEANUP_SECONDS)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the reason to stop is what the caller hears
        raise reason
    return task.result()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the work left running, and wait for it only briefly: it may be stuck too."""
    leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.wait(leftovers, timeout=CLEANUP_SECONDS))
