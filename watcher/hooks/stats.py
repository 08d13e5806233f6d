"""Counting received notifications in memory, written to the database about once a second.

A registry that pushes many images sends a notification per layer and per manifest, often hundreds at
once. A database write per notification (even grouped with those of concurrent requests) was most of the
receiver's CPU and of its answer time. So `record` only adds to the process's pending counts; a background
thread (`Flusher`, started with the first count) writes everything pending every FLUSH_SECONDS in one
transaction (one upsert per counter, one UPDATE per registry for `last_webhook_at`), and the app's shutdown
writes what is left (`flush`). Other processes (`/metrics` of another server, `watcher status`) read the
database: they see a notification within about FLUSH_SECONDS. A write that fails keeps its counts pending
for the next one; a process killed outright loses at most its last second of counts.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update

from watcher.db import session_scope
from watcher.models import Registry, utcnow
from watcher.read import counters, pollmetrics

METRIC = "watcher_webhooks_total"
#: how often the pending counts are written
FLUSH_SECONDS = 1.0
log = logging.getLogger("watcher")


@dataclass(frozen=True)
class Outcome:
    """One notification's outcome, as counted: `seen` says whether it sets the registry's last webhook.
    `registry` is the registry's key (`watcher.registrations.keys`)."""

    registry_id: int
    registry: str
    format: str
    outcome: str
    seen: bool


_pending: Counter[Outcome] = Counter()
_last_seen: dict[int, datetime] = {}
_pending_lock = threading.Lock()  # guards the two above, for a moment
_writer = threading.Lock()  # one write at a time
_flusher: tuple[int, threading.Thread] | None = None  # (pid, thread): a forked child starts its own


def record(outcome: Outcome) -> None:
    """Count `outcome` (and set its registry's `last_webhook_at` if `seen`); written within FLUSH_SECONDS."""
    with _pending_lock:
        _pending[outcome] += 1
        if outcome.seen:
            _last_seen[outcome.registry_id] = utcnow()
    _ensure_flusher()


def flush() -> None:
    """Write every count pending now (at once: tests, and the app's shutdown). Raises what the database
    raised; the counts then stay pending."""
    with _writer:
        with _pending_lock:
            batch, seen = Counter(_pending), dict(_last_seen)
            _pending.clear()
            _last_seen.clear()
        if not batch:
            return
        try:
            _write(batch, seen)
        except BaseException:
            with _pending_lock:
                _pending.update(batch)
                for registry_id, at in seen.items():
                    _last_seen.setdefault(registry_id, at)
            raise


def _ensure_flusher() -> None:
    global _flusher
    if _flusher is not None and _flusher[0] == os.getpid() and _flusher[1].is_alive():
        return
    with _pending_lock:
        if _flusher is not None and _flusher[0] == os.getpid() and _flusher[1].is_alive():
            return
        thread = threading.Thread(target=_flush_forever, name="webhook-counts", daemon=True)
        _flusher = (os.getpid(), thread)
    thread.start()


def _flush_forever() -> None:
    stop = threading.Event()
    while not stop.wait(FLUSH_SECONDS):
        try:
            flush()
        except Exception as exc:  # the database is away: the counts wait for the next second
            log.warning("webhook counts not written yet: %s", (str(exc) or type(exc).__name__).splitlines()[0])


@atexit.register
def _flush_at_exit() -> None:
    try:
        flush()
    except Exception as exc:
        log.warning("webhook counts lost at exit: %s", (str(exc) or type(exc).__name__).splitlines()[0])


def _write(batch: Counter[Outcome], seen: dict[int, datetime]) -> None:
    increments = [
        counters.Increment(
            METRIC, {**pollmetrics.registry_labels(o.registry), "format": o.format, "outcome": o.outcome}, n
        )
        for o, n in batch.items()
    ]
    with session_scope() as session:
        counters.add(session, increments)
        for registry_id, at in sorted(seen.items()):
            session.execute(update(Registry).where(Registry.id == registry_id).values(last_webhook_at=at))
