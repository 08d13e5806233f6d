"""Per-host limits held by the whole deployment: a slot semaphore and a start pacer kept in Redis.

Each process keeps its own limits (`watcher.registry.http`); these hold on top of them, so that several workers
polling one registry host stay together within its `--max-concurrency` and `--rate-limit`, and a 429's
pause or a nearly spent quota seen by one of them holds back all. Keys live under the installation's
prefix (`WATCHER_EVENTS_STREAM`), one set per host and limits.

- Slots are leases: a sorted set of holders scored by expiry, renewed by a thread while held, so a
  crashed process's slots lapse within `WATCHER_LIMIT_LEASE_SECONDS`. A slot's token names its process
  (`watcher.runtime.holder`): while a host is full, a process frees the slots of holders it knows dead (processes
  of its host that exited) at once, so a poll killed mid-listing does not hold the next one back.
- A process takes slots in batches, not one Redis call per request: one script takes as many free slots
  as it has requests waiting (and reserves their run of start times), and it hands a slot from one of its
  requests to the next itself for a short turn (`TURN_SECONDS`; an async transport also keeps a freed slot
  `LINGER_SECONDS` for its next request), then gives the slots back in one call. A slot is reused only
  while the host's starts are not paced (no `--rate-limit`, no low quota): a paced start is always
  reserved in Redis. So a burst of requests costs a couple of round trips, and another process's 429
  pause is seen within a turn.
- Starts are spaced by one shared "next start" time (Pacer's, in Redis), which pauses and quota spreading
  push later.
- Waiting for a full host costs nothing: the waiter registers in the host's waiting set and blocks on
  its wake-up list (BLPOP), which every release pushes to while someone waits; it asks again at the latest
  when the oldest lease would lapse, or after `WAKE_FALLBACK_SECONDS`. Requests of one process wait for
  each other locally (one asks Redis for all).
- If Redis cannot be reached, each process keeps only its own limits, says so in one warning, and tries
  Redis again after a while: a poll never fails or hangs for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import redis
import redis.asyncio

from watcher.registry import hostlimits
from watcher.runtime import holder
from watcher.settings import Settings, get_settings

if TYPE_CHECKING:  # the async transports hand their requests in: an SDK provider's poll never loads httpx
    import httpx

log = logging.getLogger("watcher")

#: after Redis failed, how long a process keeps to its own limits before trying Redis again
RETRY_SECONDS = 30.0
#: how long a process may pass a slot from one of its requests to the next without asking Redis again
TURN_SECONDS = 0.25
#: how long an async transport keeps a freed slot (within its turn) for its next request
LINGER_SECONDS = 0.02
#: the longest a waiter blocks on a full host's wake-up list before asking again
WAKE_FALLBACK_SECONDS = 1.0
#: while a host is full, how often a process looks for slots whose holders it knows dead
SWEEP_SECONDS = 1.0
#: wake-ups kept in a host's list at most (each one lets one waiter ask again)
WAKE_BACKLOG = 64

_NOW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# KEYS: slots, pace, waiting, wake · ARGV: limit, lease ms, interval ms, waiter id, how many to give back,
# the tokens to give back..., the tokens to take...; slots given back go to another process first, if one
# waits. Returns {slots taken, ms until the first start (or, when none: until the oldest lease lapses), gap ms}
TAKE = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
local back = tonumber(ARGV[5])
for i = 1, back do redis.call('ZREM', KEYS[1], ARGV[5 + i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local others = redis.call('ZCARD', KEYS[3])
if redis.call('ZSCORE', KEYS[3], ARGV[4]) then others = others - 1 end
if back > 0 and others > 0 then
  for i = 1, back do redis.call('LPUSH', KEYS[4], 1) end
  redis.call('LTRIM', KEYS[4], 0, WAKE_BACKLOG_LAST)
  redis.call('PEXPIRE', KEYS[4], 10000)
end
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
if free <= 0 or (back > 0 and others > 0) then
  redis.call('ZADD', KEYS[3], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[3], lease)
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, (tonumber(first[2]) or now) - now, 0}
end
redis.call('ZREM', KEYS[3], ARGV[4])
local n = math.min(free, #ARGV - 5 - back)
for i = 1, n do redis.call('ZADD', KEYS[1], now + lease, ARGV[5 + back + i]) end
redis.call('PEXPIRE', KEYS[1], lease)
local pace = redis.call('HMGET', KEYS[2], 'next', 'gap', 'until')
local start = math.max(now, tonumber(pace[1]) or 0)
local gap = tonumber(ARGV[3])
local quota_until = tonumber(pace[3]) or 0
if start < quota_until then gap = math.max(gap, tonumber(pace[2]) or 0) end
if gap > 0 then
  redis.call('HSET', KEYS[2], 'next', start + n * gap)
  redis.call('PEXPIRE', KEYS[2], math.max(start + n * gap, quota_until) - now + 1000)
end
return {n, start - now, gap}
"""
).replace("WAKE_BACKLOG_LAST", str(WAKE_BACKLOG - 1))

# KEYS: slots, pace, waiting, wake · ARGV: pause ms, quota gap ms, quota window ms, tokens...
RELEASE = (
    _NOW
    + """
for i = 4, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
if redis.call('ZCOUNT', KEYS[3], now, '+inf') > 0 then
  for i = 4, #ARGV do redis.call('LPUSH', KEYS[4], 1) end
  redis.call('LTRIM', KEYS[4], 0, WAKE_BACKLOG_LAST)
  redis.call('PEXPIRE', KEYS[4], 10000)
end
local pause, gap, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if pause <= 0 and gap <= 0 then return 0 end
local pace = redis.call('HMGET', KEYS[2], 'next', 'until')
local next_start = math.max(tonumber(pace[1]) or 0, now + pause)
local quota_until = tonumber(pace[2]) or 0
if gap > 0 then
  quota_until = now + window
  redis.call('HSET', KEYS[2], 'gap', gap, 'until', quota_until)
end
redis.call('HSET', KEYS[2], 'next', next_start)
redis.call('PEXPIRE', KEYS[2], math.max(next_start, quota_until) - now + 1000)
return 0
"""
).replace("WAKE_BACKLOG_LAST", str(WAKE_BACKLOG - 1))

# KEYS: slots · ARGV: lease ms, tokens... (a token that lapsed meanwhile stays lapsed)
RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], lease)
return 0
"""
)


def shared_url(settings: Settings) -> str | None:
    """The Redis the deployment shares, or None when there is none to share: an embedded Redis that is not
    running serves no other process (and is not started for this)."""
    from watcher import bus

    if settings.redis_url != bus.EMBEDDED:
        return settings.redis_url
    sock = bus.socket_path(settings)
    return f"unix://{sock}" if sock.exists() else None


def _client_options() -> dict[str, Any]:
    return {"socket_timeout": 2, "socket_connect_timeout": 1, "client_name": f"watcher-limits-{os.getpid()}"}


class _Outage:
    """Process-wide: whether Redis failed lately, and the one warning that says so."""

    def __init__(self) -> None:
        self._until = 0.0
        self._warned = False
        self._lock = threading.Lock()

    def active(self) -> bool:
        return time.monotonic() < self._until

    def begin(self, url: str, exc: BaseException) -> None:
        with self._lock:
            self._until = time.monotonic() + RETRY_SECONDS
            warn, self._warned = not self._warned, True
        if warn:
            parts = redis.connection.parse_url(url)
            where = parts.get("path") or f"{parts.get('host', 'localhost')}:{parts.get('port', 6379)}"
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning(
                "per-host limits are this process's own for now: Redis at %s cannot be reached (%s)", where, detail
            )

    def ended(self) -> None:
        self._warned = False


OUTAGE = _Outage()


class Grant(NamedTuple):
    """One leased slot of a host: its token in Redis, and until when (monotonic) this process may pass it
    from one request to the next itself (0: once only, its start was paced)."""

    token: str
    turn_end: float


#: what a waiting request is handed: a slot and how long to wait for its start, or None (no shared limits)
Handed = tuple[Grant, float] | None


class _SyncWaiter:
    """A thread waiting for a slot: woken with its slot, or to ask Redis for everyone (`take`)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.handed: Handed = None
        self.served = False
        self.take = False

    def done(self) -> bool:
        return self.served

    def set_result(self, handed: Handed) -> None:
        self.handed, self.served = handed, True
        self.event.set()


_Waiter = asyncio.Future[Handed] | _SyncWaiter


class _Pool:
    """One host's slots as one transport holds them: the leased slots idle for a moment, the requests
    waiting, and whether one of them is asking Redis (`taking`)."""

    def __init__(self, limits: SharedLimits, keys: list[str]) -> None:
        self.limits = limits
        self.keys = keys
        self.lock = threading.Lock()
        self.idle: list[tuple[Grant, float]] = []  # (slot, until when it stays idle here)
        self.waiters: deque[_Waiter] = deque()
        self.taking = False
        self.returning: list[tuple[Grant, float]] = []  # turn over: given back with the next ask, or at `until`
        self.blocked = False  # the asking request waits on the host's wake-up list
        self.waiter_id = secrets.token_hex(8)

    def reuse(self, now: float) -> Grant | None:
        """An idle slot still in its turn, even past its moment if the keeper has not given it back yet;
        those whose turn is over go back with the next ask (caller holds the lock)."""
        while self.idle:
            grant, until = self.idle.pop()
            if grant.turn_end > now:
                return grant
            self.returning.append((grant, until))
        return None

    def next_waiter(self, *, skip_taker: bool = False) -> _Waiter | None:
        """The first request still waiting, taken off the queue (caller holds the lock)."""
        for waiter in list(self.waiters):
            if waiter.done():
                self.waiters.remove(waiter)
            elif not (skip_taker and isinstance(waiter, _SyncWaiter) and waiter.take):
                self.waiters.remove(waiter)
                return waiter
        return None

    def wanted(self) -> int:
        """Requests waiting (caller holds the lock)."""
        self.waiters = deque(w for w in self.waiters if not w.done())
        return len(self.waiters)

    def expired(self, now: float) -> list[Grant]:
        """Once one idle or returning slot's moment passed, all of them (none was wanted meanwhile, the
        others are as surplus), taken off in one go (caller holds the lock)."""
        kept = self.idle + self.returning
        if not any(until <= now for _, until in kept):
            return []
        self.idle, self.returning = [], []
        return [grant for grant, _ in kept]

    def next_expiry(self) -> float | None:
        return min((until for _, until in self.idle + self.returning), default=None)

    def kept(self) -> bool:
        return bool(self.idle or self.returning)


class _Keeper:
    """Process-wide: one daemon thread that renews every slot this process holds, a third of a lease apart
    (one call per key), so a request may outlast a lease but a crashed process's slots still lapse; and
    that gives back the slots an async transport kept idle once their moment passed (one call per host),
    whether or not its event loop still runs."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, int], set[str]] = {}  # (url, slots key, lease ms) -> tokens
        self._idle: weakref.WeakSet[_Pool] = weakref.WeakSet()
        self._wake = threading.Condition()
        self._next_wake = 0.0  # when the thread wakes next (monotonic)
        self._pid = 0
        self._clients: dict[str, redis.Redis] = {}

    def add(self, url: str, key: str, lease_ms: int, tokens: list[str]) -> None:
        with self._wake:
            self._held.setdefault((url, key, lease_ms), set()).update(tokens)
            if self._pid != os.getpid():  # none yet, or the thread stayed in the parent of a fork
                self._pid, self._clients = os.getpid(), {}
                threading.Thread(target=self._run, name="watcher-limits-keeper", daemon=True).start()

    def discard(self, url: str, key: str, lease_ms: int, tokens: list[str]) -> None:
        with self._wake:
            held = self._held.get((url, key, lease_ms))
            if held is not None:
                held.difference_update(tokens)
                if not held:
                    del self._held[(url, key, lease_ms)]

    def linger(self, pool: _Pool, until: float) -> None:
        """`pool` keeps an idle slot until `until`: give it back then."""
        with self._wake:
            self._idle.add(pool)
            if until < self._next_wake:
                self._next_wake = until
                self._wake.notify()

    def client(self, url: str) -> redis.Redis:
        client = self._clients.get(url)
        if client is None:
            client = self._clients.setdefault(url, redis.Redis.from_url(url, **_client_options()))
        return client

    def _run(self) -> None:
        renew_at = 0.0
        while True:
            with self._wake:
                pools = list(self._idle)
                expiries = [e for e in (pool.next_expiry() for pool in pools) if e is not None]
                self._next_wake = min([renew_at, *expiries])
                delay = self._next_wake - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
            now = time.monotonic()
            for pool in pools:
                with pool.lock:
                    gone = pool.expired(now)
                    if not pool.kept():
                        self._idle.discard(pool)
                if gone:
                    pool.limits.give_back(pool, gone)
            if now >= renew_at:
                renew_at = now + self._renew() / 3000

    def _renew(self) -> int:
        """Renew every held slot; the shortest lease (ms)."""
        with self._wake:
            held = {k: list(v) for k, v in self._held.items()}
        for (url, key, lease_ms), tokens in held.items():
            with contextlib.suppress(redis.RedisError):  # the request goes on; its slot lapses if Redis stays away
                self.client(url).eval(RENEW, 1, key, lease_ms, *tokens)
        return min((lease for _, _, lease in held), default=3000)


KEEPER = _Keeper()


class Slot(NamedTuple):
    """One slot of a host, held by a request under way (`SharedLimits.enter`)."""

    host: str
    grant: Grant


class _Script:
    """A Lua script run by its SHA1 (loaded on first use), so its text is not sent with every call."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def run(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.text, len(keys), *keys, *args)

    async def arun(self, client: redis.asyncio.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.text, len(keys), *keys, *args)


_TAKE, _RELEASE = _Script(TAKE), _Script(RELEASE)
NO_PAUSE = (0, 0, 0)


class SharedLimits:
    """One transport's limits as the deployment holds them, per host its requests go to. `send` for async
    transports; `held`, or `enter` and `leave`, for threads (SDK calls) — the same keys, so both count
    against one host."""

    def __init__(self, limits: hostlimits.HostLimits, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        self._url = shared_url(settings)
        self._limits = limits
        self._prefix = f"{settings.events_stream}:limits:"
        self._suffix = f":{limits.max_concurrency}:{limits.requests_per_second:g}"
        rate = limits.requests_per_second
        self._interval_ms = math.ceil(1000 / rate) if rate > 0 else 0
        self._lease_ms = max(1, settings.limit_lease_seconds) * 1000
        self._async: redis.asyncio.Redis | None = None
        self._sync: redis.Redis | None = None
        self._pools: dict[str, _Pool] = {}
        self._pools_lock = threading.Lock()
        self._takers: set[asyncio.Task[None]] = set()
        self._swept: dict[str, float] = {}  # slots key -> when this process last looked for dead holders

    def _keys(self, host: str) -> list[str]:
        base = f"{self._prefix}{host}{self._suffix}"
        return [f"{base}:slots", f"{base}:pace", f"{base}:waiting", f"{base}:wake"]

    def _pool(self, host: str) -> _Pool:
        pool = self._pools.get(host)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.setdefault(host, _Pool(self, self._keys(host)))
        return pool

    # -- async ------------------------------------------------------------------------------------
    async def send(self, inner: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
        """`inner` sends `request` once the host has a free slot and its next start has come."""
        host = request.url.netloc.decode("ascii")
        grant = await self._acquire(host)
        if grant is None:
            return await inner.handle_async_request(request)
        try:
            response = await inner.handle_async_request(request)
        except BaseException:
            await self._free(host, grant, NO_PAUSE)
            raise
        await self._free(host, grant, self._held_back(response))
        return response

    def _client(self) -> redis.asyncio.Redis:
        if self._async is None:
            assert self._url is not None
            self._async = redis.asyncio.Redis.from_url(self._url, **_client_options())
        return self._async

    async def _acquire(self, host: str) -> Grant | None:
        """A slot once one is free (None: no shared limits now), after waiting for its start."""
        if self._url is None or OUTAGE.active():
            return None
        pool = self._pool(host)
        loop = asyncio.get_running_loop()
        with pool.lock:
            grant = pool.reuse(time.monotonic())
            if grant is not None:
                return grant
            waiter: asyncio.Future[Handed] = loop.create_future()
            pool.waiters.append(waiter)
            start, pool.taking = not pool.taking, True
        if start:
            self._start_taker(pool, loop)
        try:
            handed = await waiter
        except BaseException:  # cancelled: a slot handed meanwhile goes back
            if waiter.done() and not waiter.cancelled() and (late := waiter.result()) is not None:
                self._drop(pool, late[0])
            raise
        if handed is None:
            return None
        grant, delay = handed
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:  # cancelled while waiting for its start
                self._drop(pool, grant)
                raise
        return grant

    async def _take(self, pool: _Pool) -> None:
        """Asks Redis for as many slots as this transport's requests wait for, until none waits; while the
        host is full, blocks on its wake-up list instead of asking again and again."""
        client = self._client()
        try:
            while True:
                with pool.lock:
                    want = pool.wanted()
                    if want == 0:
                        pool.taking = False
                        return
                    back, pool.returning = [grant for grant, _ in pool.returning], []
                tokens = [holder.token() for _ in range(want)]
                answer = await _TAKE.arun(client, pool.keys, self._take_args(pool, tokens, back))
                handed, lapse_ms = self._grants(pool, tokens, answer)
                if handed:
                    left = self._hand_out(pool, handed)
                    if left:
                        await self._release(pool, left, NO_PAUSE)
                    continue
                with pool.lock:
                    pool.blocked = not pool.returning  # slots came back meanwhile: ask with them at once
                if pool.blocked:
                    if self._sweep_due(pool.keys[0]) and await self._sweep(pool.keys[0]):
                        pool.blocked = False
                        continue
                    await client.blpop([pool.keys[3]], timeout=self._wake_wait(lapse_ms))
                    pool.blocked = False
        except (redis.RedisError, OSError) as exc:
            self._lost(pool, exc)
        finally:
            with pool.lock:
                pool.taking = pool.blocked = False
                unused, pool.returning = pool.returning, []
                pool.idle += [(grant, 0.0) for grant, _ in unused]
            if unused:
                KEEPER.linger(pool, 0.0)

    async def _free(self, host: str, grant: Grant, pause: tuple[int, int, int]) -> None:
        """A request is done with its slot: the next waiting request gets it, or it stays a moment for the
        next one, or (its turn over, or the answer asked to hold back) it goes back to Redis."""
        pool = self._pool(host)
        now = time.monotonic()
        if pause == NO_PAUSE and now < grant.turn_end:
            with pool.lock:
                waiter = pool.next_waiter()
                if waiter is None:
                    until = min(grant.turn_end, now + LINGER_SECONDS)
                    pool.idle.append((grant, until))
            if waiter is None:
                KEEPER.linger(pool, until)
            else:
                waiter.set_result((grant, 0.0))
            return
        if pause == NO_PAUSE:
            with pool.lock:  # its turn is over: given back with the next ask of a request here, if one comes
                keep = not pool.blocked  # (never held while this process waits for the host)
                if keep:
                    pool.returning.append((grant, now + LINGER_SECONDS))
                    start = not pool.taking and pool.wanted() > 0
                    pool.taking = pool.taking or start
            if keep:
                if start:
                    self._start_taker(pool, asyncio.get_running_loop())
                else:
                    KEEPER.linger(pool, now + LINGER_SECONDS)
                return
        await self._release(pool, [grant], pause)

    def _start_taker(self, pool: _Pool, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._take(pool))
        self._takers.add(task)
        task.add_done_callback(self._takers.discard)

    async def _release(self, pool: _Pool, grants: list[Grant], pause: tuple[int, int, int]) -> None:
        assert self._url is not None
        tokens = [grant.token for grant in grants]
        KEEPER.discard(self._url, pool.keys[0], self._lease_ms, tokens)
        try:
            await _RELEASE.arun(self._client(), pool.keys, [*pause, *tokens])
        except (redis.RedisError, OSError) as exc:
            OUTAGE.begin(self._url, exc)  # the slots lapse with their lease

    def _drop(self, pool: _Pool, grant: Grant) -> None:
        """A slot nobody will use: the keeper gives it back at once."""
        with pool.lock:
            pool.idle.append((grant, 0.0))
        KEEPER.linger(pool, 0.0)

    async def aclose(self) -> None:
        """Gives back the slots kept idle, and closes the connections of the async API."""
        for pool in list(self._pools.values()):
            with pool.lock:
                idle = [grant for grant, _ in pool.idle + pool.returning]
                pool.idle, pool.returning = [], []
            if idle and self._url is not None and not OUTAGE.active():
                await self._release(pool, idle, NO_PAUSE)
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    # -- threads ----------------------------------------------------------------------------------
    @contextmanager
    def held(self, host: str) -> Iterator[None]:
        """Blocks the calling thread until `host` has a free slot and its next start has come; frees it after."""
        slot = self.enter(host)
        try:
            yield
        finally:
            self.leave(slot)

    def enter(self, host: str) -> Slot | None:
        """Blocks until `host` has a free slot and its next start has come: the slot to `leave` (None when
        there are no shared limits now). For SDK hooks, whose start and end are two separate calls."""
        if self._url is None or OUTAGE.active():
            return None
        pool = self._pool(host)
        waiter = _SyncWaiter()
        with pool.lock:
            pool.waiters.append(waiter)
            if not pool.taking:
                pool.taking = waiter.take = True
        while not waiter.served:
            if waiter.take:
                self._take_blocking(pool, waiter)
            else:
                waiter.event.wait()
                waiter.event.clear()
        if waiter.handed is None:
            return None
        grant, delay = waiter.handed
        if delay > 0:
            time.sleep(delay)
        return Slot(host, grant)

    def _take_blocking(self, pool: _Pool, me: _SyncWaiter) -> None:
        """As `_take`, in the calling thread, until its own request has a slot; then another waiting
        thread takes over the asking."""
        try:
            while not me.served:
                with pool.lock:
                    want = pool.wanted()
                tokens = [holder.token() for _ in range(max(1, want))]
                answer = _TAKE.run(self._sync_client(), pool.keys, self._take_args(pool, tokens))
                handed, lapse_ms = self._grants(pool, tokens, answer)
                if handed:
                    left = self._hand_out(pool, handed)
                    if left:
                        self._release_blocking(pool, left, NO_PAUSE)
                    continue
                if self._sweep_due(pool.keys[0]) and self._sweep_blocking(pool.keys[0]):
                    continue
                self._sync_client().blpop([pool.keys[3]], timeout=self._wake_wait(lapse_ms))
        except (redis.RedisError, OSError) as exc:
            self._lost(pool, exc)
            me.served = True
        finally:
            with pool.lock:
                me.take = False
                after = next((w for w in pool.waiters if not w.done()), None)
                if isinstance(after, _SyncWaiter):
                    after.take = True
                    after.event.set()
                else:
                    pool.taking = False

    def leave(
        self,
        slot: Slot | None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        throttled: bool = False,
    ) -> None:
        """Frees `slot`, and holds back every process as the answer (`status`, `headers`) asks: a 429, or
        an SDK's own throttling error (`throttled`), pauses the host."""
        if slot is None:
            return
        pause = NO_PAUSE if status is None else held_back(status, headers or {}, self._limits, throttled=throttled)
        pool = self._pool(slot.host)
        if pause == NO_PAUSE and time.monotonic() < slot.grant.turn_end:
            with pool.lock:
                waiter = pool.next_waiter(skip_taker=True)
            if waiter is not None:
                waiter.set_result((slot.grant, 0.0))
                return
        self._release_blocking(pool, [slot.grant], pause)

    def _release_blocking(self, pool: _Pool, grants: list[Grant], pause: tuple[int, int, int]) -> None:
        self.give_back(pool, grants, pause, client=self._sync_client())

    def give_back(
        self,
        pool: _Pool,
        grants: list[Grant],
        pause: tuple[int, int, int] = NO_PAUSE,
        client: redis.Redis | None = None,
    ) -> None:
        """Frees `grants` in Redis (one call), waking a process that waits for the host."""
        assert self._url is not None
        tokens = [grant.token for grant in grants]
        KEEPER.discard(self._url, pool.keys[0], self._lease_ms, tokens)
        try:
            _RELEASE.run(client or KEEPER.client(self._url), pool.keys, [*pause, *tokens])
        except (redis.RedisError, OSError) as exc:
            OUTAGE.begin(self._url, exc)

    def _sync_client(self) -> redis.Redis:
        if self._sync is None:
            assert self._url is not None
            self._sync = redis.Redis.from_url(self._url, **_client_options())
        return self._sync

    def close(self) -> None:
        """Closes the connections of the blocking API."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -- what both share ----------------------------------------------------------------------------
    def _take_args(self, pool: _Pool, tokens: list[str], back: Sequence[Grant] = ()) -> list[str | int]:
        given = [grant.token for grant in back]
        if given:
            assert self._url is not None
            KEEPER.discard(self._url, pool.keys[0], self._lease_ms, given)
        limits: list[str | int] = [self._limits.max_concurrency, self._lease_ms, self._interval_ms, pool.waiter_id]
        return [*limits, len(given), *given, *tokens]

    def _grants(self, pool: _Pool, tokens: list[str], answer: list[Any]) -> tuple[list[Handed], int]:
        """The slots a TAKE answer gave, each with the wait for its start; when none, the ms until the
        oldest lease of the host lapses."""
        assert self._url is not None
        taken, first_ms, gap_ms = (int(value) for value in answer)
        if taken <= 0:
            return [], first_ms
        OUTAGE.ended()
        KEEPER.add(self._url, pool.keys[0], self._lease_ms, tokens[:taken])
        turn_end = time.monotonic() + TURN_SECONDS if gap_ms <= 0 else 0.0
        return [(Grant(token, turn_end), (first_ms + i * gap_ms) / 1000) for i, token in enumerate(tokens[:taken])], 0

    @staticmethod
    def _hand_out(pool: _Pool, handed: list[Handed]) -> list[Grant]:
        """One slot to each waiting request, first come first served; the slots nobody waits for now."""
        left: list[Grant] = []
        with pool.lock:
            for one in handed:
                waiter = pool.next_waiter()
                if waiter is None:
                    assert one is not None
                    left.append(one[0])
                else:
                    waiter.set_result(one)
        return left

    def _sweep_due(self, key: str) -> bool:
        """Whether to look for dead holders of the full host `key` now (once a second while it stays full)."""
        now = time.monotonic()
        if now - self._swept.get(key, -SWEEP_SECONDS) < SWEEP_SECONDS:
            return False
        self._swept[key] = now
        return True

    async def _sweep(self, key: str) -> bool:
        """Frees the slots of `key` whose holders are known dead; whether there were any."""
        dead = _dead(await self._client().zrange(key, 0, -1))
        if dead:
            await self._client().zrem(key, *dead)
        return bool(dead)

    def _sweep_blocking(self, key: str) -> bool:
        dead = _dead(cast(list[Any], self._sync_client().zrange(key, 0, -1)))
        if dead:
            self._sync_client().zrem(key, *dead)
        return bool(dead)

    @staticmethod
    def _wake_wait(lapse_ms: int) -> float:
        """How long to block on the wake-up list: until the oldest lease lapses, at most the fallback."""
        return min(WAKE_FALLBACK_SECONDS, max(lapse_ms, 10) / 1000)

    def _lost(self, pool: _Pool, exc: BaseException) -> None:
        """Redis failed: this process keeps its own limits for a while; every waiting request goes on."""
        assert self._url is not None
        OUTAGE.begin(self._url, exc)
        with pool.lock:
            while (waiter := pool.next_waiter()) is not None:
                waiter.set_result(None)

    def _held_back(self, response: httpx.Response) -> tuple[int, int, int]:
        """(pause, quota gap, quota window) in ms that an answer asks of every process, as LimitedTransport
        holds back its own: a 429's wait, and a nearly spent quota spread over its window."""
        return held_back(response.status_code, response.headers, self._limits)


def _dead(tokens: list[Any]) -> list[str]:
    """The tokens whose holders are known dead (a dead holder's slot is never renewed or freed again)."""
    texts = (token.decode() if isinstance(token, bytes) else str(token) for token in tokens)
    return [token for token in texts if holder.known_dead(token)]


def held_back(
    status: int, headers: Mapping[str, str], limits: hostlimits.HostLimits, *, throttled: bool = False
) -> tuple[int, int, int]:
    """The pause, quota gap and quota window (ms) an answer asks of every client of the host: a 429 (or an
    answer an SDK knows as throttling, `throttled`) pauses for its Retry-After, else the backoff."""
    cap = limits.max_wait_seconds
    pause = gap = window = 0.0
    if status == 429 or throttled:
        told = hostlimits.retry_after_seconds(headers)
        pause = min(cap, told if told is not None else limits.backoff_seconds)
    quota = hostlimits.quota_left(headers)
    if quota is not None:
        left, seconds = quota
        if left <= 0:
            pause = max(pause, min(cap, max(seconds, 1.0)))
        elif left < hostlimits.LOW_QUOTA and seconds > 0:
            gap = min(cap, seconds / left)
            window = min(seconds, cap)
            pause = max(pause, gap)
    return math.ceil(pause * 1000), math.ceil(gap * 1000), math.ceil(window * 1000)
