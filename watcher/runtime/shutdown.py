"""Asking a poll in flight to stop: SIGTERM or SIGINT during a poll ends it cleanly instead of mid-way.

While a poll runs on the main thread, these signals only set the poll's stop event; the poll's loop sees
it within a fraction of a second, cancels the listing, records the run as abandoned and releases its
lease. Outside a poll the process's own handlers apply as before. In `watcher run`, the Celery main
process forwards its shutdown to the pool children running polls (see `watcher.tasks.app`), whose
SIGTERM would otherwise kill them mid-poll, or whose poll would hold up the warm shutdown until its
deadline.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """An event set by SIGTERM/SIGINT while the block runs (and by whoever else holds it).

    Signal handlers belong to the main thread; elsewhere the event is only what the caller passed in.
    """
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
