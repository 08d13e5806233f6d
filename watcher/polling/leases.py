"""A poll's claim on its registry: a short lease, renewed by a heartbeat while the poll runs.

One poll per registry at a time: a poll claims the registry for `WATCHER_POLL_LEASE_SECONDS` (15 s) and a
heartbeat thread renews the claim every third of that, so a poll may run as long as its deadline allows
while a crashed poll's claim lapses within 15 s. A claim names its holder (`watcher.runtime.holder`): one whose
holder is known dead (a process of this host that exited) is taken at once, so a poll killed mid-listing
does not block the next one. The lease only keeps two polls from working at once; what keeps them from
both committing against one repository's snapshot is that repository's revision, compare-and-set at its
commit (`watcher.polling.saving`).

SQLAlchemy Core on `watcher.schema.registries`, in a Core connection or an ORM session alike: a poll takes
its lease before its first request to the registry, without importing the ORM (`watcher.polling.claim`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sqlalchemy import ColumnElement, Engine, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from watcher.runtime import holder
from watcher.schema import registries as REGISTRIES
from watcher.schema import utcnow
from watcher.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    Writer = Connection | Session

log = logging.getLogger("watcher")
REG = REGISTRIES.c


def lease_length() -> timedelta:
    return timedelta(seconds=max(1, get_settings().poll_lease_seconds))


def new_owner() -> str:
    """Who holds a lease: this host and process, and this one poll (two polls never share a claim)."""
    return holder.token()


class Claimed(Enum):
    """How a poll came to hold the registry."""

    #: nobody held it: the last poll gave it back in the transaction that closed its run
    FREE = "free"
    #: its lease had lapsed, or its holder is known dead: that poll's run may still be `running`
    TAKEN_OVER = "taken over"


def claim(session: Writer, registry_id: int, owner: str) -> Claimed | None:
    """Take the registry if it is free, its lease lapsed or its holder is known dead; None if another
    poll holds it. A poll that starts is no longer waiting: the slot the tick dispatched it for
    (`due_since`) is cleared."""
    now = utcnow()
    if _take(session, registry_id, owner, REG.lease_owner.is_(None) & _lapsed(now)):
        return Claimed.FREE  # a steady poll's one statement
    if _take(session, registry_id, owner, _lapsed(now)):
        return Claimed.TAKEN_OVER
    held_by = session.scalar(select(REG.lease_owner).where(REG.id == registry_id))
    if held_by is None or not holder.known_dead(held_by):
        return None
    taken = _take(session, registry_id, owner, REG.lease_owner == held_by)  # unless taken meanwhile
    return Claimed.TAKEN_OVER if taken else None


def _lapsed(now: datetime) -> ColumnElement[bool]:
    return or_(REG.lease_until.is_(None), REG.lease_until < now)


def _take(session: Writer, registry_id: int, owner: str, free: ColumnElement[bool]) -> bool:
    taken = session.execute(
        update(REGISTRIES)
        .where(REG.id == registry_id)
        .where(free)
        .values(lease_owner=owner, lease_until=utcnow() + lease_length(), due_since=None)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def renew(engine: Engine, registry_id: int, owner: str) -> bool:
    """Extend the lease; False once it is no longer ours (released, or lapsed and taken)."""
    with engine.begin() as connection:
        renewed = connection.execute(
            update(REGISTRIES)
            .where(REG.id == registry_id, REG.lease_owner == owner)
            .values(lease_until=utcnow() + lease_length())
        )
    return bool(renewed.rowcount)


def release(session: Writer, registry_id: int, owner: str) -> None:
    session.execute(
        update(REGISTRIES)
        .where(REG.id == registry_id, REG.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


class Beat:
    """`with Beat(every, beat, name):` calls `beat()` from a daemon thread every `every` seconds until the
    block ends, or until `beat()` returns False."""

    def __init__(self, every: float, beat: Callable[[], bool], name: str) -> None:
        self.every = every
        self._call = beat
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._done.wait(self.every):
            if not self._call():
                return


class Heartbeat(Beat):
    """`with Heartbeat(...):` renews the lease from a daemon thread until the block ends."""

    def __init__(self, engine: Engine, registry_id: int, owner: str, name: str) -> None:
        self.engine = engine
        self.name = name
        self.registry_id = registry_id
        self.owner = owner
        super().__init__(lease_length().total_seconds() / 3, self._renew, f"watcher-lease-{registry_id}")

    def _renew(self) -> bool:
        """False once the lease is no longer ours (released, or lapsed and taken): the revision checks at
        commit decide then. A database that cannot be reached is tried again at the next beat."""
        try:
            return renew(self.engine, self.registry_id, self.owner)
        except SQLAlchemyError as exc:
            log.warning("registry %r: lease not renewed: %s", self.name, str(exc).splitlines()[0])
            return True
