"""A SIGTERM that reaches `watcher run` before Celery has put its own handler in place.

Until then `watcher run`'s handler raises SystemExit, so that the start in progress unwinds and its
`finally` stops what was started (the HTTP side, the embedded Redis). But an exception raised by a signal
handler is lost when the handler happens to run inside a weakref callback or a finalizer (SQLAlchemy's
and the collector's run at any moment): the interpreter prints "Exception ignored" and goes on. The start
then went on into Celery, which had never heard the signal, and the worker ran until it was killed. So the
signal is also remembered here and honoured at the next point that can: before Celery starts
(`raise_if_requested`), and once Celery's handler is in place (`resend_if_requested`, from `worker_ready`),
by sending the signal again, for Celery's warm shutdown.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


class _Requested:
    signum: int | None = None


_requested = _Requested()


def install() -> None:
    """SIGTERM ends the start in progress (SystemExit), and is remembered in case that exit is lost."""
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    _requested.signum = signum
    raise SystemExit(128 + signum)


def raise_if_requested() -> None:
    """The exit a SIGTERM asked for, if its SystemExit was lost on the way."""
    if _requested.signum is not None:
        raise SystemExit(128 + _requested.signum)


def resend_if_requested() -> None:
    """A SIGTERM that came before Celery's own handler was in place, sent again for that handler."""
    if _requested.signum is not None:
        os.kill(os.getpid(), _requested.signum)
