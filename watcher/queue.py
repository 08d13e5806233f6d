"""Queueing a poll from outside the workers (the API's and the console's "Poll now", a webhook): the same
Celery tasks beat's tick dispatches, sent at once or refused in one line — never a request left hanging on
the broker.

Repository polls coalesce: while one of a repository is queued and not yet started, queueing it again does
nothing (a Redis `SET NX EX` key under the installation's prefix, which the task clears as it starts). A
poll queued while the repository's previous one is still listing waits until RELIST_SECONDS after that one
started (a Celery countdown), gathering every notification of the meantime: so a burst of notifications for
one repository costs at most two listings a second, the first at once and one after the burst, instead of
one per listing's duration for as long as the burst lasts. A poll queued once the previous one has finished
starts at once, however soon: pushes one after the other are each reported as fast as the first.

A notification may name the tags it pushed (`HookFormat.pushed`); a listing that does not show one of them
yet (Distribution notifies before it links the tag) queues one more listing CONFIRM_SECONDS later, once:
so a forged notification costs at most two listings, and a true one is never left for the next scheduled
poll.
"""

from __future__ import annotations

import contextlib
import hashlib

import redis

from watcher import bus, registries
from watcher.db import session_scope
from watcher.errors import StateError
from watcher.settings import get_settings

#: a queued mark lapses after this long even if no worker ever started its task
QUEUED_SECONDS = 600
#: a repository's polls start at least this far apart while notifications keep coming
RELIST_SECONDS = 1.0
#: a listing not showing a pushed tag yet is made once more this much later
CONFIRM_SECONDS = 1.0
#: at most this many pushed tags are carried to the poll (the rest are only listed)
MAX_EXPECTED_TAGS = 20


def queue_poll(name: str) -> str:
    """Queue a `manual` poll of `name` now; returns the queued task's id (the poll's id until it runs)."""
    from kombu.exceptions import OperationalError

    from watcher.tasks.jobs import poll_registry

    with session_scope() as session:
        registries.find(session, name)
    try:
        return str(poll_registry.apply_async((name,), {"trigger": "manual"}, retry=False).id)
    except (OperationalError, OSError) as exc:
        raise StateError(
            f"registry {name!r}: the poll could not be queued: the broker did not answer ({exc})"
        ) from None


def queued_key(name: str, repository: str) -> str:
    """The Redis key that marks a poll of `repository` of `name` as queued (hashed: names are long)."""
    digest = hashlib.sha256(f"{name}\0{repository}".encode()).hexdigest()[:32]
    return f"{get_settings().events_stream}:repository-poll:{digest}"


def started_key(name: str, repository: str) -> str:
    """The Redis key that says a poll of the repository is listing and started less than RELIST_SECONDS ago."""
    return queued_key(name, repository) + ":started"


def queue_repository_poll(
    name: str,
    repository: str,
    client: redis.Redis | None = None,
    *,
    expect: list[str] | None = None,
    delay: float = 0.0,
) -> bool:
    """Queue a poll of one repository unless one is queued already; True when this call queued it. `expect`:
    the tags the notification says were pushed; `delay`: seconds to wait at least before it starts."""
    from kombu.exceptions import OperationalError

    from watcher.tasks.jobs import poll_repository_task

    key = queued_key(name, repository)
    try:
        client = client or bus.connect()
        if not client.set(key, "1", nx=True, ex=QUEUED_SECONDS):
            return False
        wait = max(client.pttl(started_key(name, repository)) / 1000, delay)
        options = {"expect": expect[:MAX_EXPECTED_TAGS]} if expect else {}
        poll_repository_task.apply_async((name, repository), options, countdown=wait if wait > 0 else None, retry=False)
    except (redis.RedisError, OperationalError, OSError) as exc:
        try:
            if client is not None:
                client.delete(key)
        except (redis.RedisError, OSError):
            pass  # the mark lapses on its own
        raise StateError(
            f"registry {name!r}: the poll of {repository} could not be queued: the broker did not answer ({exc})"
        ) from None
    return True


def started(name: str, repository: str, client: redis.Redis | None = None) -> None:
    """A repository poll starts: a notification arriving from now on queues another one, to start
    RELIST_SECONDS after this one if this one is still listing then (`finished`)."""
    pipeline = (client or bus.connect()).pipeline(transaction=False)
    pipeline.delete(queued_key(name, repository))
    pipeline.set(started_key(name, repository), "1", px=int(RELIST_SECONDS * 1000))
    pipeline.execute()


def finished(name: str, repository: str) -> None:
    """A repository poll is done (whatever its outcome): a poll queued from now on starts at once. Never
    raises: if Redis is away, the mark lapses by itself within RELIST_SECONDS."""
    with contextlib.suppress(redis.RedisError, OSError):
        bus.connect().delete(started_key(name, repository))
