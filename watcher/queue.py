"""Queueing a poll from outside the workers (the API's and the console's "Poll now"): the same Celery task
beat's tick dispatches, sent at once or refused in one line — never a request left hanging on the broker."""

from __future__ import annotations

from watcher import registries
from watcher.db import session_scope
from watcher.errors import StateError


def queue_poll(name: str) -> str:
    """Queue a poll of `name` now; returns the queued task's id (the poll's id until it runs)."""
    from kombu.exceptions import OperationalError

    from watcher.tasks.jobs import poll_registry

    with session_scope() as session:
        registries.find(session, name)
    try:
        return str(poll_registry.apply_async((name,), retry=False).id)
    except (OperationalError, OSError) as exc:
        raise StateError(
            f"registry {name!r}: the poll could not be queued: the broker did not answer ({exc})"
        ) from None
