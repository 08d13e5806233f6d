"""How much the worker pool can take, so that beat's tick queues no more than the pool can start soon.

Each worker's main process says how many pool processes it has every HEARTBEAT_SECONDS, in one Redis hash
under the installation's prefix (a field per worker, with the moment it lapses): workers on any number of
hosts add up, and a worker that died without a word drops out within ALIVE_SECONDS. Each pool process
keeps a moving average of how long its polls take (its *pace*, in another hash, a field per process, after
every poll: `took`). The tick reads both hashes and the broker's queue length in one round trip and
dispatches at most QUEUE_SECONDS of the pool's work, minus the tasks waiting: `processes x QUEUE_SECONDS /
pace`, between 1 and QUEUE_PER_PROCESS a process. Enough that the pool never idles between two ticks, few
enough that a poll queued now starts within seconds however slow the registries are (a poll of a registry
200 ms away takes ~0.6 s: twenty of those a process would be a 12 s queue in front of every poll queued
after them, whichever team's), and a pool that cannot keep up leaves the rest due in the database (late,
and reported so, and dispatched in turns between workspaces: `watcher.polling.scheduler`) instead of in a
queue that grows without end.

Registries are named here by key (`watcher.registrations.keys`).
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
from collections.abc import Iterable

import redis

from watcher.settings import get_settings

HEARTBEAT_SECONDS = 10.0
ALIVE_SECONDS = 30.0
#: the queue holds about this many seconds of the pool's work at most: more than the tick's period (1 s),
#: so that the pool never idles between two ticks, and little enough that a poll queued now starts soon
QUEUE_SECONDS = 2.0
#: tasks waiting in the broker per pool process at most, however quick the polls (a steady poll of a small
#: registry nearby takes ~0.1 s: about QUEUE_SECONDS of work), and until any poll has been timed
QUEUE_PER_PROCESS = 20
#: a process's pace weighs its last poll this much (a moving average over its last ~10 polls)
PACE_WEIGHT = 0.2
#: a process's pace lapses this long after its last poll: an idle pool's next polls are not judged by
#: what the registries took then
PACE_ALIVE_SECONDS = 300.0
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


def pace_key() -> str:
    return f"{get_settings().events_stream}:pace"


class _Pace:
    """This process's moving average of its polls' durations (None before its first)."""

    seconds: float | None = None


_pace = _Pace()


def took(client: redis.Redis, seconds: float) -> None:
    """A poll (a task that held this pool process) took `seconds`: this process's pace, for the tick."""
    before = _pace.seconds
    _pace.seconds = seconds if before is None else before + PACE_WEIGHT * (seconds - before)
    process = f"{socket.gethostname()}:{os.getpid()}"
    client.hset(pace_key(), process, f"{_pace.seconds:.4f} {time.time() + PACE_ALIVE_SECONDS:.0f}")


def room(client: redis.Redis) -> int:
    """How many more tasks the tick may queue now."""
    pipeline = client.pipeline(transaction=False)
    pipeline.hgetall(workers_key())
    pipeline.hgetall(pace_key())
    for key in queue_keys():
        pipeline.llen(key)
    workers, paces, *lengths = pipeline.execute()
    processes, lapsed = _alive(workers)
    if lapsed:
        client.hdel(workers_key(), *lapsed)
    seconds, stale = _mean_pace(paces)
    if stale:
        client.hdel(pace_key(), *stale)
    return max(0, math.ceil(per_process(seconds) * (processes or os.cpu_count() or 1)) - sum(lengths))


def per_process(pace: float | None) -> float:
    """Tasks that may wait per pool process, when a poll takes `pace` seconds (None: not known yet)."""
    if pace is None or pace <= 0:
        return QUEUE_PER_PROCESS
    return min(float(QUEUE_PER_PROCESS), max(1.0, QUEUE_SECONDS / pace))


def _mean_pace(paces: dict[str, str]) -> tuple[float | None, list[str]]:
    """The mean of the pool processes' paces still alive (None: none), and the fields that lapsed (or are
    unreadable)."""
    now = time.time()
    alive, stale = [], []
    for process, value in paces.items():
        try:
            seconds, until = value.split()
            if float(until) < now:
                raise ValueError
            alive.append(max(0.0, float(seconds)))
        except ValueError:
            stale.append(process)
    return (sum(alive) / len(alive) if alive else None), stale


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


def queued_key(key: str) -> str:
    """The Redis key that marks a scheduled poll of the registry `key` as queued, for LOST_AFTER_SECONDS
    (hashed: keys are long)."""
    return f"{get_settings().events_stream}:scheduled:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def mark_queued(client: redis.Redis, keys: Iterable[str]) -> None:
    pipeline = client.pipeline(transaction=False)
    for key in keys:
        pipeline.set(queued_key(key), "1", ex=LOST_AFTER_SECONDS)
    pipeline.execute()


def lost(client: redis.Redis, keys: list[str]) -> set[str]:
    """Which of these registries (keys), whose scheduled poll is queued as far as the database knows, were
    queued so long ago that the task is taken for lost."""
    if not keys:
        return set()
    marks = client.mget([queued_key(key) for key in keys])
    return {key for key, mark in zip(keys, marks, strict=True) if mark is None}
