"""The outbox relay: unpublished events from the database onto the Redis stream, each exactly once.

The database commit of a poll is the only place an event is born; this relay copies events out in
detection order. The Lua script appends an event only if its id is not among those appended recently, so
a relay that dies between appending and marking rows published re-sends nothing when it runs again. One
relay runs at a time (a Redis lock), which keeps each repository's events in order on the stream.

With per-workspace streams (`watcher.outbox.streams`) a batch goes to several streams in the same one Lua
call: the lock and the memory of appended ids stay one for the deployment, so each stream gets its
workspace's events exactly once and in detection order (a repository belongs to one workspace, so to one
stream), and each stream is trimmed to `WATCHER_EVENTS_MAXLEN` on its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import Engine, Update, case, select, update

from watcher.db import get_engine
from watcher.delivery.fanout import fan_out
from watcher.errors import StateError
from watcher.outbox.events import stream_entry
from watcher.outbox.streams import stream_of
from watcher.read.model import EVENT_COLUMNS
from watcher.schema import events as EVENTS
from watcher.schema import utcnow
from watcher.settings import Settings, get_settings

SCRIPT = (Path(__file__).parent / "relay.lua").read_text()
REMEMBER = timedelta(days=7)
BATCH = 500
LOCK_SECONDS = 60


def dedupe_key(stream: str) -> str:
    return f"{stream}:appended"


def relay(
    client: redis.Redis,
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
    wait_seconds: float = 30.0,
    on_deliveries: Callable[[dict[int, int]], object] | None = None,
) -> int:
    """Publish every unpublished event; returns how many were appended. Raises StateError if Redis fails.
    `on_deliveries` is told, after each batch's commit, how many deliveries each subscription got (when
    some did): the delivery engine's kick, so that the first attempt does not wait for its sweep."""
    settings = settings or get_settings()
    engine = engine or get_engine()
    stream = settings.events_stream  # the lock's and the appended ids' prefix, whichever streams are written
    try:
        lock = client.lock(f"{stream}:relay-lock", timeout=LOCK_SECONDS, blocking_timeout=wait_seconds)
        if not lock.acquire():
            return 0
        try:
            return _drain(client, engine, settings, lock, on_deliveries)
        finally:
            with contextlib.suppress(redis.exceptions.LockError):  # expired: its new holder carries on
                lock.release()
    except redis.RedisError as exc:
        raise StateError(f"the event stream's Redis is unavailable ({exc}); events wait in the database") from None


def _drain(
    client: redis.Redis,
    engine: Engine,
    settings: Settings,
    lock: redis.lock.Lock,
    on_deliveries: Callable[[dict[int, int]], object] | None,
) -> int:
    append = client.register_script(SCRIPT)
    seen = dedupe_key(settings.events_stream)
    appended = 0
    while True:
        with engine.begin() as connection:  # Core rows: the ORM's loading of each event is not needed here
            unpublished = EVENTS.c.published_at.is_(None)
            batch = connection.execute(
                select(*EVENT_COLUMNS).where(unpublished).order_by(EVENTS.c.id).limit(BATCH)
            ).all()
            if not batch:
                return appended
            now = int(time.time() * 1000)
            args: list[str | int] = [settings.events_maxlen, now, int(REMEMBER.total_seconds() * 1000)]
            streams: dict[str, int] = {}  # each stream of the batch: its index in KEYS (from 2)
            for event in batch:
                entry = stream_entry(event)
                stream = stream_of(settings, event.workspace)
                args += [event.event_id, streams.setdefault(stream, len(streams) + 2), len(entry)]
                for key, value in entry.items():
                    args += [key, value]
            ids = append(keys=[seen, *streams], args=args)
            stream_ids = {event.id: stream_id for event, stream_id in zip(batch, ids, strict=True) if stream_id}
            appended += len(stream_ids)
            written = fan_out(connection, batch, utcnow())  # each subscription's deliveries, born with the publishing
            connection.execute(_published([event.id for event in batch], stream_ids))
        if written and on_deliveries is not None:
            on_deliveries(written)
        lock.extend(LOCK_SECONDS, replace_ttl=True)


def _published(ids: list[int], stream_ids: dict[int, str]) -> Update:
    """The whole batch marked published in one UPDATE, each appended event with its stream id (an event
    appended before, by a relay that died before marking it, keeps none)."""
    values: dict[str, object] = {"published_at": utcnow()}
    if stream_ids:
        values["stream_id"] = case(stream_ids, value=EVENTS.c.id, else_=EVENTS.c.stream_id)
    return update(EVENTS).where(EVENTS.c.id.in_(ids)).values(**values)
