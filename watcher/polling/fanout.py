"""Fan-out: a big registry's repositories listed in chunks by any free worker, as one poll.

A poll run by a worker (`watcher run`) whose catalog names more than `WATCHER_FANOUT_REPOSITORIES`
repositories does not list them all itself. It writes a plan to the shared Redis (the chunks of names, a
queue of chunks to do, the run's running totals), dispatches a `watcher.poll_chunk` task for each further
chunk, and takes chunks from the queue itself like any other worker until none is left; then it waits for
the chunks others hold and closes its run from the totals. So however many workers are free, they share
the registry, and with none free the poll's own process lists every chunk. Each chunk is listed and
committed as a whole poll's repositories are (`watcher.polling.pipeline`, and the per-repository compare-and-set
of `watcher.polling.saving`): what is atomic is still the repository.

Whoever takes a chunk holds it on a lease (`WATCHER_POLL_LEASE_SECONDS`) renewed by a heartbeat; a chunk
whose worker died (SIGKILL, a lost host) lapses back into the queue and is taken again, by the poll's own
process at the latest, since it waits for every chunk. One whose holder is known dead (a process of the
taker's host that exited, `watcher.runtime.holder`) goes back at once. A chunk's counts are added once, by whichever
listing of it completes first, while events are counted as each group commits: a chunk listed again after
its worker died finds what that worker committed unchanged, so nothing is counted twice. A chunk taken
MAX_TAKES times fails the poll. A helper takes no chunk once the poll no longer holds its registry's lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import redis
from sqlalchemy import Engine, select

from watcher import bus
from watcher.db import get_engine, session_scope
from watcher.errors import RegistryError, StateError
from watcher.models import Registry, Repository, utcnow
from watcher.pollers import poller_for
from watcher.pollers.base import Poller
from watcher.polling import leases, pipeline, saving
from watcher.polling.pipeline import PollTally
from watcher.polling.saving import Listed, Saved, Target
from watcher.polling.snapshot import IN_CHUNK, Stored
from watcher.registrations.scope import Scope
from watcher.registrations.spec import RegistrySpec
from watcher.registrations.store import find, spec_of
from watcher.registry.deadline import run_bounded
from watcher.runtime import holder
from watcher.runtime.shutdown import stop_on_signals
from watcher.settings import get_settings

log = logging.getLogger("watcher")
#: a chunk taken this many times without completing fails the poll (its workers keep dying on it)
MAX_TAKES = 3
#: how often the poll's process looks for lapsed chunks while others list theirs
WAIT_SECONDS = 0.25
#: how long a plan stays readable after its poll closed it (late helpers find it closed, not missing)
KEEP_SECONDS = 600
COUNTS = ("repositories", "tags", "unchanged", "saved")

#: dispatch(run id, how many helper tasks)
Dispatch = Callable[[int, int], None]


def chunk_size() -> int:
    """`WATCHER_FANOUT_REPOSITORIES`: repositories a chunk, and the catalog size above which a poll splits."""
    return max(0, get_settings().fanout_repositories)


def chunks_of(names: list[str], gone: list[str], size: int) -> list[dict[str, list[str]]]:
    """The catalog's names, and the stored repositories it no longer names, `size` to a chunk."""
    items = [(name, False) for name in names] + [(name, True) for name in gone]
    return [
        {"names": [n for n, g in part if not g], "gone": [n for n, g in part if g]}
        for part in (items[start : start + size] for start in range(0, len(items), size))
    ]


# ---- the plan in Redis --------------------------------------------------------------------------------
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"
# KEYS: meta todo taken takers takes chunks; ARGV: token lease_ms max_takes [idx holder]... (chunks whose
# holder is known dead: lapsed now, unless another took them meanwhile)
TAKE = f"""
if redis.call('HGET', KEYS[1], 'closed') ~= '0' then return false end
{_NOW}
for i = 4, #ARGV - 1, 2 do
  if redis.call('HGET', KEYS[4], ARGV[i]) == ARGV[i + 1] then redis.call('ZADD', KEYS[3], 0, ARGV[i]) end
end
for _, idx in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], idx)
  redis.call('HDEL', KEYS[4], idx)
  redis.call('LPUSH', KEYS[2], idx)
end
local idx = redis.call('LPOP', KEYS[2])
if not idx then return false end
if redis.call('HINCRBY', KEYS[5], idx, 1) > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'closed', '1', 'fatal',
    'chunk ' .. idx .. ' was taken ' .. ARGV[3] .. ' times and never completed: its workers died or failed on it')
  return false
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), idx)
redis.call('HSET', KEYS[4], idx, ARGV[1])
return {{idx, redis.call('HGET', KEYS[6], idx)}}
"""
# KEYS: taken takers; ARGV: idx token lease_ms
RENEW = f"""
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
{_NOW}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
# KEYS: taken takers todo; ARGV: idx token
GIVE_BACK = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
return 1
"""
# KEYS: meta taken takers todo done failures; ARGV: idx token error_kind error repositories tags unchanged
# saved failure...
COMPLETE = """
if redis.call('HGET', KEYS[1], 'closed') ~= '0' then return 0 end
if redis.call('HSETNX', KEYS[5], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('LREM', KEYS[4], 0, ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSETNX', KEYS[1], 'error_kind', ARGV[3])
  redis.call('HSETNX', KEYS[1], 'error', ARGV[4])
end
local names = {'repositories', 'tags', 'unchanged', 'saved'}
for i, name in ipairs(names) do redis.call('HINCRBY', KEYS[1], name, ARGV[4 + i]) end
for i = 9, #ARGV do redis.call('RPUSH', KEYS[6], ARGV[i]) end
return 1
"""


@dataclass
class Taken:
    """A chunk this process holds: its position in the plan, the names to list and those to remove."""

    index: int
    names: list[str]
    gone: list[str]


class Plan:
    """One fanned-out poll's chunks and totals, under `{WATCHER_EVENTS_STREAM}:fanout:{run id}:`."""

    def __init__(self, client: redis.Redis, run_id: int) -> None:
        self.client = client
        self.run_id = run_id
        base = f"{get_settings().events_stream}:fanout:{run_id}:"
        self.meta, self.chunks, self.todo, self.taken, self.takers, self.takes, self.done, self.failures = (
            base + key for key in ("meta", "chunks", "todo", "taken", "takers", "takes", "done", "failures")
        )
        self._take = client.register_script(TAKE)
        self._renew = client.register_script(RENEW)
        self._give_back = client.register_script(GIVE_BACK)
        self._complete = client.register_script(COMPLETE)

    @property
    def keys(self) -> list[str]:
        return [self.meta, self.chunks, self.todo, self.taken, self.takers, self.takes, self.done, self.failures]

    def create(self, registry_id: int, owner: str, emit_new: bool, deadline: float, chunks: list[Any]) -> None:
        fields: dict[Any, Any] = {"closed": "0", "registry_id": registry_id, "owner": owner}
        fields |= {"emit_new": int(emit_new), "deadline": deadline, "chunk_count": len(chunks)}
        fields |= dict.fromkeys(COUNTS, 0)
        keep = int(deadline - time.time()) + KEEP_SECONDS
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*self.keys)
            pipe.hset(self.meta, mapping=fields)
            pipe.hset(self.chunks, mapping={str(i): json.dumps(chunk) for i, chunk in enumerate(chunks)})
            pipe.rpush(self.todo, *range(len(chunks)))
            for key in self.keys:
                pipe.expire(key, keep)
            pipe.execute()

    def read(self) -> dict[str, str]:
        """The plan's settings and totals; empty once it expired (or never was)."""
        return cast(dict[str, str], self.client.hgetall(self.meta))

    def take(self, token: str, lease_ms: int) -> Taken | None:
        """The next chunk to list (a lapsed one first, or one whose holder is known dead), now held by
        `token`; None when none is left to take."""
        keys = [self.meta, self.todo, self.taken, self.takers, self.takes, self.chunks]
        dead = [item for item in self._takers().items() if holder.known_dead(item[1])]
        found = self._take(keys=keys, args=[token, lease_ms, MAX_TAKES, *(part for item in dead for part in item)])
        if not found:
            return None
        chunk = json.loads(found[1])
        return Taken(int(found[0]), chunk["names"], chunk["gone"])

    def _takers(self) -> dict[str, str]:
        """Chunk -> the token holding it."""
        held: dict[Any, Any] = cast(dict[Any, Any], self.client.hgetall(self.takers))
        return {_text(idx): _text(token) for idx, token in held.items()}

    def renew(self, index: int, token: str, lease_ms: int) -> bool:
        return bool(self._renew(keys=[self.taken, self.takers], args=[index, token, lease_ms]))

    def give_back(self, index: int, token: str) -> None:
        self._give_back(keys=[self.taken, self.takers, self.todo], args=[index, token])

    def complete(self, index: int, token: str, tally: PollTally) -> bool:
        """Add the chunk's counts and failures, unless another listing of it completed first."""
        error = tally.first_error
        args: list[Any] = [index, token, type(error).__name__ if error else "", error.message if error else ""]
        args += [tally.repositories, tally.tags, tally.unchanged, tally.saved]
        args += [json.dumps(failure) for failure in tally.failures]
        keys = [self.meta, self.taken, self.takers, self.todo, self.done, self.failures]
        return bool(self._complete(keys=keys, args=args))

    def count(self, *, events: int = 0, requests: int = 0, ignored: int = 0, codes: Counter[str] | None = None) -> None:
        """What was done whoever completes the chunk: events committed, requests made, names ignored."""
        values = {"events": events, "requests": requests, "ignored": ignored}
        values |= {f"code:{code}": n for code, n in (codes or Counter()).items()}
        with self.client.pipeline(transaction=True) as pipe:
            for key, amount in values.items():
                if amount:
                    pipe.hincrby(self.meta, key, amount)
            pipe.execute()

    def remaining(self) -> tuple[int, str]:
        """(chunks not yet completed, why the plan failed or "")."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.llen(self.todo)
            pipe.zcard(self.taken)
            pipe.hget(self.meta, "fatal")
            todo, taken, fatal = pipe.execute()
        return int(todo) + int(taken), fatal or ""

    def close(self) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """No chunk is taken or completed any more; the totals, and (repository, cause) of each failure."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.meta, "closed", "1")
            pipe.hgetall(self.meta)
            pipe.lrange(self.failures, 0, -1)
            for key in self.keys:
                pipe.expire(key, KEEP_SECONDS)
            _, meta, failures = pipe.execute()[:3]
        return meta, [(repo, cause) for repo, cause in map(json.loads, failures)]


class Taker(leases.Beat):
    """`with Taker(plan) as taker:` this process's hold on the chunk it lists, renewed by a heartbeat thread
    while the block runs; the chunk is handed back if the block ends before it completes."""

    def __init__(self, plan: Plan, name: str) -> None:
        self.plan = plan
        self.name = name
        self.token = leases.new_owner()
        self.current: int | None = None
        self.lease_ms = int(leases.lease_length().total_seconds() * 1000)
        super().__init__(self.lease_ms / 3000, self._renew, f"watcher-chunk-{plan.run_id}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        if self.current is not None:  # cut short: another worker lists it
            try:
                self.plan.give_back(self.current, self.token)
            except redis.RedisError as error:  # it lapses back on its own
                log.warning("registry %r: chunk not handed back: %s", self.name, _line(error))

    def take(self) -> Taken | None:
        taken = self.plan.take(self.token, self.lease_ms)
        self.current = taken.index if taken else None
        return taken

    def _renew(self) -> bool:
        index = self.current
        try:
            if index is not None:
                self.plan.renew(index, self.token, self.lease_ms)
        except redis.RedisError as exc:
            log.warning("registry %r: chunk lease not renewed: %s", self.name, _line(exc))
        return True


# ---- listing one chunk ---------------------------------------------------------------------------------
@dataclass
class ChunkStore:
    """The database side of one chunk (`pipeline.Store`): its stored repositories read when it is taken,
    and each committed group's events counted in the plan as it commits."""

    engine: Engine
    target: Target
    plan: Plan
    names: list[str]

    def stored(self) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        with session_scope(self.engine) as session:
            for start in range(0, len(self.names), IN_CHUNK):
                rows = session.execute(
                    select(Repository.name, Repository.id, Repository.fingerprint, Repository.revision).where(
                        Repository.registry_id == self.target.registry_id,
                        Repository.name.in_(self.names[start : start + IN_CHUNK]),
                    )
                )
                found |= {name: Stored(repo_id, fp, revision) for name, repo_id, fp, revision in rows}
        return found

    def save(self, group: list[Listed]) -> list[Saved]:
        saved = saving.save(self.engine, self.target, group)
        events = sum(len(one.events) for one in saved)
        if events:
            self.plan.count(events=events)
        return saved


async def list_chunk(
    poller: Poller, engine: Engine, target: Target, taker: Taker, taken: Taken, writer: Executor
) -> tuple[PollTally, bool]:
    """List and commit one chunk; its tally, and whether this listing of it was the one counted."""
    loop = asyncio.get_running_loop()
    store = ChunkStore(engine, target, taker.plan, taken.names + taken.gone)
    stored = await loop.run_in_executor(writer, store.stored)
    gone = [name for name in taken.gone if name in stored]
    tally = PollTally(total=len(taken.names) + len(gone))
    await pipeline.list_repositories(poller, target.scope, taken.names, gone, stored, store, writer, tally)
    counted = taker.plan.complete(taken.index, taker.token, tally)
    taker.current = None
    return tally, counted


# ---- the poll's own process ----------------------------------------------------------------------------
@dataclass
class Coordinator:
    """The `pipeline.Split` of a poll run by a worker: splits a big catalog, lists chunks until none is
    left, waits for the others', and (`close`) makes the plan's totals the poll's."""

    engine: Engine
    target: Target
    run_id: int
    owner: str
    dispatch: Dispatch
    writer: Executor
    tally: PollTally
    deadline: float
    plan: Plan | None = field(default=None, init=False)

    async def __call__(self, poller: Poller, names: list[str], gone: list[str]) -> bool:
        size = chunk_size()
        if not size or len(names) + len(gone) <= size:
            return False
        chunks = chunks_of(names, gone, size)
        name = self.target.key
        try:
            plan = Plan(bus.connect(), self.run_id)
            plan.create(self.target.registry_id, self.owner, self.target.emit_new, self.deadline, chunks)
        except (redis.RedisError, StateError) as exc:
            log.warning("registry %r: listed here, not split: the shared Redis failed: %s", name, _line(exc))
            return False
        self.plan = plan
        self.tally.elsewhere.chunks = len(chunks)
        try:
            self.dispatch(self.run_id, len(chunks) - 1)
        except Exception as exc:  # this process lists every chunk
            log.warning("registry %r: chunks not dispatched, listed here: %s", name, _line(exc))
        with Taker(plan, name) as taker:
            while True:
                taken = taker.take()
                if taken is not None:
                    listed, counted = await list_chunk(poller, self.engine, self.target, taker, taken, self.writer)
                    self.tally.events += listed.events
                    self.tally.elsewhere.here += counted
                    continue
                remaining, fatal = plan.remaining()
                if fatal:
                    raise StateError(f"registry {name!r}: {fatal}")
                if not remaining:
                    return True
                await asyncio.sleep(WAIT_SECONDS)

    def close(self) -> None:
        """Once the poll ended, whichever way: helpers stop, and the tally says what every chunk did."""
        if self.plan is None:
            return
        try:
            meta, failures = self.plan.close()
        except redis.RedisError as exc:
            log.warning("registry %r: the chunks' totals were not read: %s", self.target.key, _line(exc))
            return
        tally = self.tally
        tally.repositories, tally.tags, tally.unchanged, tally.saved = (int(meta.get(key, 0)) for key in COUNTS)
        tally.failures = failures
        elsewhere = tally.elsewhere
        elsewhere.events = max(0, int(meta.get("events", 0)) - len(tally.events))
        elsewhere.requests, elsewhere.ignored = int(meta.get("requests", 0)), int(meta.get("ignored", 0))
        elsewhere.codes = Counter({k.removeprefix("code:"): int(v) for k, v in meta.items() if k.startswith("code:")})
        if meta.get("error_kind"):
            tally.first_error = _error_of(meta["error_kind"], meta.get("error", ""))


def _error_of(kind: str, message: str) -> RegistryError:
    """The first repository failure a chunk recorded, as the error it was (a transient one is retried)."""
    classes: list[type[RegistryError]] = [RegistryError]
    for cls in classes:
        if cls.__name__ == kind:
            return cls(message)
        classes += cls.__subclasses__()
    return RegistryError(message)


# ---- a helper: the `watcher.poll_chunk` task -----------------------------------------------------------
@dataclass
class Helped:
    """What one helper task did for a poll: chunks it listed and counted, their repositories and events."""

    registry: str
    run_id: int
    chunks: int = 0
    repositories: int = 0
    events: int = 0
    failed: int = 0
    requests: int = 0


def help_poll(name: str, run_id: int, *, engine: Engine | None = None, stop: threading.Event | None = None) -> Helped:
    """List chunks of poll run `run_id` of registry `name` until none is left to take. Nothing to do when
    the poll is over. Raises Interrupted (the chunk in hand goes back to the queue), or what the chunk's
    listing raised apart from its repositories' failures."""
    helped = Helped(name, run_id)
    plan = Plan(bus.connect(), run_id)
    meta = plan.read()
    if meta.get("closed") != "0":
        return helped
    engine = engine or get_engine()
    with session_scope(engine) as session:
        row = find(session, name)
        spec = spec_of(row)
        target = Target.of(row, spec.url, Scope.from_options(spec.options), meta["emit_new"] == "1")
    seconds = float(meta["deadline"]) - time.time()
    if row.id != int(meta["registry_id"]) or seconds <= 0:
        return helped
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watcher-writer")
    with stop_on_signals(stop) as stop_event, Taker(plan, name) as taker:
        try:
            run_bounded(
                lambda: _help(spec, engine, target, taker, writer, meta["owner"], helped),
                seconds=seconds,
                stop=stop_event,
                deadline_message="the poll exceeded its deadline (--poll-timeout)",
            )
        finally:
            writer.shutdown(wait=True, cancel_futures=True)  # then the Taker hands back a chunk cut short
    return helped


async def _help(
    spec: RegistrySpec, engine: Engine, target: Target, taker: Taker, writer: Executor, owner: str, helped: Helped
) -> None:
    """Take chunks and list them; the poller (an SDK client, for some providers costly to make) is made
    only once a chunk is taken: most helpers of a poll arrive when none is left."""
    loop = asyncio.get_running_loop()
    poller: Poller | None = None
    try:
        while await loop.run_in_executor(writer, holds_lease, engine, target.registry_id, owner):
            taken = taker.take()
            if taken is None:
                return
            if poller is None:
                poller = poller_for(spec)
                await poller.prepare()
            tally, counted = await list_chunk(poller, engine, target, taker, taken, writer)
            helped.chunks += counted
            helped.repositories += tally.repositories
            helped.events += len(tally.events)
            helped.failed += len(tally.failures)
    finally:
        if poller is not None:
            await _count_requests(poller, taker.plan, target.key, helped)


async def _count_requests(poller: Poller, plan: Plan, name: str, helped: Helped) -> None:
    """A helper's requests, codes and ignored names go to the poll's totals; its ignored lines to its log."""
    try:
        helped.requests = poller.requests
        plan.count(requests=poller.requests, ignored=poller.ignored_count, codes=poller.codes)
    except redis.RedisError as exc:
        log.warning("registry %r: requests not counted: %s", name, _line(exc))
    finally:
        for line in poller.ignored:
            log.warning("registry %r: %s", name, line)
        await poller.aclose()


def holds_lease(engine: Engine, registry_id: int, owner: str) -> bool:
    """Whether the poll `owner` still holds its registry: a helper takes no chunk of a poll that is over."""
    with session_scope(engine) as session:
        held = session.execute(
            select(Registry.id).where(
                Registry.id == registry_id, Registry.lease_owner == owner, Registry.lease_until > utcnow()
            )
        ).first()
    return held is not None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]
