"""How much the worker pool can take, so that beat's tick queues no more than the pool can start soon.

Each worker's main process says how many pool processes it has every HEARTBEAT_SECONDS, in one Redis hash
under the installation's prefix (a field per worker, with the moment it lapses): workers on any number of
hosts add up, and a worker that died without a word drops out within ALIVE_SECONDS. The tick reads that
hash and the broker's queue length in one round trip and dispatches at most `QUEUE_PER_PROCESS * pool
processes - tasks waiting`: enough that the pool never idles between two ticks, few enough that a pool
that cannot keep up leaves the rest due in the database (late, and reported so) instead of in a queue
that grows without end.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable

import redis

from watcher.settings import get_settings

HEARTBEAT_SECONDS = 10.0
ALIVE_SECONDS = 30.0
#: tasks waiting in the broker per pool process at most (a steady poll of a small registry takes ~0.1 s,
#: so this is about two seconds of work: more than one tick's worth)
QUEUE_PER_PROCESS = 20
#: a scheduled poll queued this long ago and not started yet is taken for lost (a broker that lost its
#: queue, a worker killed holding it) and queued again; until then its registry is never queued twice
LOST_AFTER_SECONDS = 600
#: the Celery queue's keys in Redis, under the installation's prefix (kombu keeps one list per priority step)
QUEUE_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def workers_key() -> str:
    return f"{get_settings().events_stream}:workers"


def queue_keys() -> list[str]:
    prefix = f"{get_settings().events_stream}:celery:celery"
    return [prefix + suffix for suffix in QUEUE_SUFFIXES]


def announce(client: redis.Redis, worker: str, processes: int) -> None:
    """`worker` (host and pid) runs `processes` pool processes, for ALIVE_SECONDS from now."""
    client.hset(workers_key(), worker, f"{processes} {time.time() + ALIVE_SECONDS:.0f}")


def forget(client: redis.Redis, worker: str) -> None:
    client.hdel(workers_key(), worker)


def queued(client: redis.Redis) -> int:
    """Tasks waiting in the broker (all kinds: polls, chunks, repository polls, ticks)."""
    pipeline = client.pipeline(transaction=False)
    for key in queue_keys():
        pipeline.llen(key)
    return sum(pipeline.execute())


def room(client: redis.Redis) -> int:
    """How many more tasks the tick may queue now."""
    pipeline = client.pipeline(transaction=False)
    pipeline.hgetall(workers_key())
    for key in queue_keys():
        pipeline.llen(key)
    workers, *lengths = pipeline.execute()
    processes, lapsed = _alive(workers)
    if lapsed:
        client.hdel(workers_key(), *lapsed)
    return max(0, QUEUE_PER_PROCESS * (processes or os.cpu_count() or 1) - sum(lengths))


def _alive(workers: dict[str, str]) -> tuple[int, list[str]]:
    """Pool processes of the workers still alive, and the fields of those that lapsed (or are unreadable)."""
    now = time.time()
    processes, lapsed = 0, []
    for worker, value in workers.items():
        try:
            count, until = value.split()
            if float(until) < now:
                raise ValueError
            processes += max(0, int(count))
        except ValueError:
            lapsed.append(worker)
    return processes, lapsed


def queued_key(name: str) -> str:
    """The key that marks a scheduled poll of `name` as queued, for LOST_AFTER_SECONDS (hashed: names are long)."""
    return f"{get_settings().events_stream}:scheduled:{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def mark_queued(client: redis.Redis, names: Iterable[str]) -> None:
    pipeline = client.pipeline(transaction=False)
    for name in names:
        pipeline.set(queued_key(name), "1", ex=LOST_AFTER_SECONDS)
    pipeline.execute()


def lost(client: redis.Redis, names: list[str]) -> set[str]:
    """Which of these registries, whose scheduled poll is queued as far as the database knows, were queued
    so long ago that the task is taken for lost."""
    if not names:
        return set()
    marks = client.mget([queued_key(name) for name in names])
    return {name for name, mark in zip(names, marks, strict=True) if mark is None}
