"""Starting a delivery run as soon as deliveries are written, not at the next sweep.

The relay calls `kick` after a commit that wrote deliveries (`watcher.outbox.relay`'s `on_deliveries`):
it queues one `watcher.deliver` task unless one is queued and not started yet (a Redis mark, cleared by
the task as it starts: `started`), so a burst of polls queues one run, not a hundred. Celery is imported
only when there is something to deliver: `watcher poll` of a workspace without subscriptions never loads
it. A kick that cannot be sent is one warning line: the beat's sweep (every second) delivers anyway.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

log = logging.getLogger("watcher")
#: a queued run's mark lapses this soon if the task never starts (an expired or lost message)
MARK_MS = 5000
#: a kick's task not started by then is dropped: the sweep has run by then anyway
EXPIRES_SECONDS = 10.0
#: a claiming run's turn lapses this soon unless renewed (a killed run's next one waits no longer)
TURN_SECONDS = 5


def mark_key() -> str:
    from watcher.settings import get_settings

    return f"{get_settings().events_stream}:deliveries:kicked"  # ':' is in no workspace's name


def kick(counts: Mapping[int, int] | None = None) -> None:
    """Queue a delivery run now (`counts`: the deliveries each subscription just got; nothing when none)."""
    if counts is not None and not any(counts.values()):
        return
    try:
        from watcher import bus

        if not bus.connect().set(mark_key(), "1", nx=True, px=MARK_MS):
            return  # a run is queued and will see these deliveries
        from watcher.tasks.app import DELIVER_TASK, app

        app.send_task(DELIVER_TASK, expires=EXPIRES_SECONDS, retry=False)
    except Exception as exc:
        log.warning("deliveries not kicked (the sweep delivers them within a second): %s", str(exc).splitlines()[0])


class Turn:
    """The one claiming delivery run of the deployment: a Redis lock, held for `TURN_SECONDS` and renewed
    at each claim, given up when the run stops claiming (its lanes end their attempts meanwhile, while the
    next run claims). One run's loop serves every lane; more runs at once would only hold more pool
    processes, which polls need. A killed run's turn lapses within `TURN_SECONDS`."""

    def __init__(self) -> None:
        from watcher import bus
        from watcher.settings import get_settings

        key = f"{get_settings().events_stream}:deliveries:turn"
        self._lock = bus.connect().lock(key, timeout=TURN_SECONDS, blocking=False)

    def take(self) -> bool:
        return bool(self._lock.acquire(blocking=False))

    def keep(self) -> bool:
        """Renew the turn; False once it is no longer this run's."""
        import redis

        try:
            return bool(self._lock.reacquire())
        except redis.exceptions.LockError:
            return False

    def give(self) -> None:
        import redis

        with contextlib.suppress(redis.exceptions.LockError, redis.RedisError):
            self._lock.release()


def started() -> None:
    """A delivery run starts: the next kick queues another (for deliveries this run may not see)."""
    from watcher import bus

    bus.connect().delete(mark_key())
