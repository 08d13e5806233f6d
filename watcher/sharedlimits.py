"""Per-host limits held by the whole deployment: a slot semaphore and a start pacer kept in Redis.

Each process keeps its own limits (`watcher.http`); these hold on top of them, so that several workers
polling one registry host stay together within its `--max-concurrency` and `--rate-limit`, and a 429's
pause or a nearly spent quota seen by one of them holds back all. Keys live under the installation's
prefix (`WATCHER_EVENTS_STREAM`), one pair per host and limits.

- Slots are leases: a sorted set of holders scored by expiry, renewed by a thread while held, so a
  crashed process's slots lapse within `WATCHER_LIMIT_LEASE_SECONDS`. A holder names its process
  (`watcher.holder`): while a host is full, a process frees the slots of holders it knows dead (processes
  of its host that exited) at once, so a poll killed mid-listing does not hold the next one back.
- Starts are spaced by one shared "next start" time (Pacer's, in Redis), which pauses and quota spreading
  push later.
- One Lua script per request start (slot and start time) and one per end (release, and whatever pause the
  answer asked for): atomic, one round trip each. While every slot is taken, one waiter per process
  polls, backing off.
- If Redis cannot be reached, each process keeps only its own limits, says so in one warning, and tries
  Redis again after a while: a poll never fails or hangs for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import httpx
import redis
import redis.asyncio

from watcher import holder, http
from watcher.settings import Settings, get_settings

log = logging.getLogger("watcher")

#: after Redis failed, how long a process keeps to its own limits before trying Redis again
RETRY_SECONDS = 30.0
#: while every slot is taken, the first and the longest wait between two tries (one of this process's own
#: requests ending cuts the wait short)
FULL_WAIT_FIRST, FULL_WAIT_MAX = 0.005, 0.025
#: while a host is full, how often a process looks for slots whose holders it knows dead
SWEEP_SECONDS = 1.0

# KEYS: slots, pace · ARGV: token, limit, lease ms, interval ms · returns -1 (full) or ms until the start
START = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
local pace = redis.call('HMGET', KEYS[2], 'next', 'gap', 'until')
local start = math.max(now, tonumber(pace[1]) or 0)
local gap = tonumber(ARGV[4])
local quota_until = tonumber(pace[3]) or 0
if start < quota_until then gap = math.max(gap, tonumber(pace[2]) or 0) end
if gap > 0 then
  redis.call('HSET', KEYS[2], 'next', start + gap)
  redis.call('PEXPIRE', KEYS[2], math.max(start + gap, quota_until) - now + 1000)
end
return start - now
"""

# KEYS: slots, pace · ARGV: token, pause ms, quota gap ms, quota window ms
END = """
redis.call('ZREM', KEYS[1], ARGV[1])
local pause, gap, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if pause <= 0 and gap <= 0 then return 0 end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
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

# KEYS: slots · ARGV: lease ms, tokens... (a token that lapsed meanwhile stays lapsed)
RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], lease)
return 0
"""


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


class _Renewer:
    """Process-wide: one daemon thread that renews every slot this process holds, a third of a lease apart
    (one call per key), so a request may outlast a lease but a crashed process's slots still lapse."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, int], set[str]] = {}  # (url, slots key, lease ms) -> tokens
        self._lock = threading.Lock()
        self._pid = 0
        self._clients: dict[str, redis.Redis] = {}

    def add(self, url: str, key: str, lease_ms: int, token: str) -> None:
        with self._lock:
            self._held.setdefault((url, key, lease_ms), set()).add(token)
            if self._pid != os.getpid():  # none yet, or the thread stayed in the parent of a fork
                self._pid, self._clients = os.getpid(), {}
                threading.Thread(target=self._run, name="watcher-limits-renewer", daemon=True).start()

    def discard(self, url: str, key: str, lease_ms: int, token: str) -> None:
        with self._lock:
            tokens = self._held.get((url, key, lease_ms))
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del self._held[(url, key, lease_ms)]

    def _run(self) -> None:
        while True:
            with self._lock:
                held = {k: list(v) for k, v in self._held.items()}
            shortest = min((lease for _, _, lease in held), default=3000)
            for (url, key, lease_ms), tokens in held.items():
                try:
                    client = self._clients.get(url) or self._clients.setdefault(
                        url, redis.Redis.from_url(url, **_client_options())
                    )
                    client.eval(RENEW, 1, key, lease_ms, *tokens)
                except redis.RedisError:
                    pass  # the request goes on; its slot lapses if Redis stays away
            time.sleep(shortest / 3000)


RENEWER = _Renewer()


class Slot(NamedTuple):
    """One slot of a host, held by a request under way (`SharedLimits.enter`)."""

    keys: list[str]
    token: str


class SharedLimits:
    """One transport's limits as the deployment holds them, per host its requests go to. `send` for async
    transports; `held`, or `enter` and `leave`, for threads (SDK calls) — the same keys, so both count
    against one host."""

    def __init__(self, limits: http.HostLimits, settings: Settings | None = None) -> None:
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
        self._head: asyncio.Lock | None = None  # one waiter per transport polls a full host ...
        self._freed: asyncio.Event | None = None  # ... woken early when one of its own requests ends
        self._head_sync = threading.Lock()
        self._freed_sync = threading.Event()
        self._swept: dict[str, float] = {}  # slots key -> when this process last looked for dead holders

    def _keys(self, host: str) -> list[str]:
        base = f"{self._prefix}{host}{self._suffix}"
        return [f"{base}:slots", f"{base}:pace"]

    # -- async ------------------------------------------------------------------------------------
    async def send(self, inner: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
        """`inner` sends `request` once the host has a free slot and its next start has come."""
        keys = self._keys(request.url.netloc.decode("ascii"))
        token = await self._start(keys)
        if token is None:
            return await inner.handle_async_request(request)
        try:
            response = await inner.handle_async_request(request)
        except BaseException:
            await self._end(keys, token, None)
            raise
        await self._end(keys, token, response)
        return response

    def _client(self) -> redis.asyncio.Redis:
        if self._async is None:
            assert self._url is not None
            self._async = redis.asyncio.Redis.from_url(self._url, **_client_options())
        return self._async

    async def _start(self, keys: list[str]) -> str | None:
        """A slot's token once one is free (None: no shared limits now); waits until its start time."""
        if self._url is None or OUTAGE.active():
            return None
        token = holder.token()
        self._head = self._head or asyncio.Lock()
        freed = self._freed = self._freed or asyncio.Event()
        wait = FULL_WAIT_FIRST
        try:
            async with self._head:
                while True:
                    if OUTAGE.active():
                        return None
                    delay = int(await self._client().eval(START, 2, *keys, *self._start_args(token)))
                    if delay >= 0:
                        break
                    if self._sweep_due(keys[0]) and await self._sweep(keys[0]):
                        continue
                    freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(freed.wait(), wait * (0.5 + random.random()))
                    wait = min(FULL_WAIT_MAX, wait * 2)
        except (redis.RedisError, OSError) as exc:
            return self._lost(exc)
        self._granted(keys, token)
        if delay > 0:
            try:
                await asyncio.sleep(delay / 1000)
            except BaseException:  # cancelled while waiting for its start: the slot lapses with its lease
                RENEWER.discard(self._url, keys[0], self._lease_ms, token)
                raise
        return token

    async def _end(self, keys: list[str], token: str, response: httpx.Response | None) -> None:
        assert self._url is not None
        RENEWER.discard(self._url, keys[0], self._lease_ms, token)
        try:
            await self._client().eval(END, 2, *keys, token, *self._held_back(response))
        except (redis.RedisError, OSError) as exc:
            OUTAGE.begin(self._url, exc)  # the slot lapses with its lease
        if self._freed is not None:
            self._freed.set()

    async def aclose(self) -> None:
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
        keys = self._keys(host)
        token = self._start_blocking(keys)
        return None if token is None else Slot(keys, token)

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
        pause = (0, 0, 0) if status is None else held_back(status, headers or {}, self._limits, throttled=throttled)
        self._end_blocking(slot.keys, slot.token, pause)

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

    def _start_blocking(self, keys: list[str]) -> str | None:
        if self._url is None or OUTAGE.active():
            return None
        token = holder.token()
        wait = FULL_WAIT_FIRST
        try:
            with self._head_sync:
                while True:
                    if OUTAGE.active():
                        return None
                    delay = int(self._sync_client().eval(START, 2, *keys, *self._start_args(token)))
                    if delay >= 0:
                        break
                    if self._sweep_due(keys[0]) and self._sweep_blocking(keys[0]):
                        continue
                    self._freed_sync.clear()
                    self._freed_sync.wait(wait * (0.5 + random.random()))
                    wait = min(FULL_WAIT_MAX, wait * 2)
        except (redis.RedisError, OSError) as exc:
            return self._lost(exc)
        self._granted(keys, token)
        if delay > 0:
            time.sleep(delay / 1000)
        return token

    def _end_blocking(self, keys: list[str], token: str, pause: tuple[int, int, int] = (0, 0, 0)) -> None:
        assert self._url is not None
        RENEWER.discard(self._url, keys[0], self._lease_ms, token)
        try:
            self._sync_client().eval(END, 2, *keys, token, *pause)
        except (redis.RedisError, OSError) as exc:
            OUTAGE.begin(self._url, exc)
        self._freed_sync.set()

    # -- what both share ----------------------------------------------------------------------------
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

    def _granted(self, keys: list[str], token: str) -> None:
        assert self._url is not None
        OUTAGE.ended()
        RENEWER.add(self._url, keys[0], self._lease_ms, token)

    def _lost(self, exc: BaseException) -> str | None:
        """Redis failed: this process keeps its own limits for a while, so no slot to hold (None)."""
        assert self._url is not None
        OUTAGE.begin(self._url, exc)
        return None

    # -- what a start and an answer carry -----------------------------------------------------------
    def _start_args(self, token: str) -> list[str | int]:
        return [token, self._limits.max_concurrency, self._lease_ms, self._interval_ms]

    def _held_back(self, response: httpx.Response | None) -> tuple[int, int, int]:
        """(pause, quota gap, quota window) in ms that an answer asks of every process, as LimitedTransport
        holds back its own: a 429's wait, and a nearly spent quota spread over its window."""
        if response is None:
            return 0, 0, 0
        return held_back(response.status_code, response.headers, self._limits)


def _dead(tokens: list[Any]) -> list[str]:
    """The tokens whose holders are known dead (a dead holder's slot is never renewed or freed again)."""
    texts = (token.decode() if isinstance(token, bytes) else str(token) for token in tokens)
    return [token for token in texts if holder.known_dead(token)]


def held_back(
    status: int, headers: Mapping[str, str], limits: http.HostLimits, *, throttled: bool = False
) -> tuple[int, int, int]:
    """The pause, quota gap and quota window (ms) an answer asks of every client of the host: a 429 (or an
    answer an SDK knows as throttling, `throttled`) pauses for its Retry-After, else the backoff."""
    cap = limits.max_wait_seconds
    pause = gap = window = 0.0
    if status == 429 or throttled:
        told = http.retry_after_seconds(headers)
        pause = min(cap, told if told is not None else limits.backoff_seconds)
    quota = http.quota_left(headers)
    if quota is not None:
        left, seconds = quota
        if left <= 0:
            pause = max(pause, min(cap, max(seconds, 1.0)))
        elif left < http.LOW_QUOTA and seconds > 0:
            gap = min(cap, seconds / left)
            window = min(seconds, cap)
            pause = max(pause, gap)
    return math.ceil(pause * 1000), math.ceil(gap * 1000), math.ceil(window * 1000)
