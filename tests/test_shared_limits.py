"""Per-host limits hold for the whole deployment: real `watcher poll` processes against one registry host,
measured where the registry feels them (a fake that records requests in flight and their start times)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Watcher
from tests.fakes.crowded_registry import CrowdedRegistry
from tests.support.processes import stop_process
from tests.support.redis_server import RedisServer
from watcher import sharedlimits
from watcher.http import HostLimits
from watcher.polling import poll
from watcher.settings import get_settings
from watcher.sharedlimits import SharedLimits, held_back

PROCESSES = 4


def owners(count: int, repositories: int, tags: int) -> dict[str, list[str]]:
    """`count` owners (`p0`...), each with its repositories and tags."""
    return {f"p{i}/r{r}": [f"t{t}" for t in range(tags)] for i in range(count) for r in range(repositories)}


@pytest.fixture(autouse=True)
def _fresh_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis outage one test causes is not carried into the next test of this process."""
    monkeypatch.setattr(sharedlimits, "OUTAGE", sharedlimits._Outage())


@pytest.fixture
def crowded() -> Iterator[CrowdedRegistry]:
    with CrowdedRegistry(owners(PROCESSES, repositories=4, tags=4), delay=0.05) as server:
        yield server


def poll_in_processes(watcher: Watcher, server: CrowdedRegistry, *limits: str, tags: int = 16) -> None:
    """One registry per owner on the same host, each polled by its own `watcher poll` process at once."""
    for i in range(PROCESSES):
        added = watcher.add_registry(f"p{i}", server.url, "--repository", f"p{i}/*", "--no-verify", *limits)
        assert added.exit_code == 0, added.output
    procs = [
        subprocess.Popen(
            ["watcher", "poll", f"p{i}"], env=watcher.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for i in range(PROCESSES)
    ]
    try:
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            stop_process(proc)
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
        assert f"{tags} tags" in output, output
    assert server.overlapping() >= 2, "the polls never overlapped: the test proves nothing"


def test_processes_together_stay_within_max_concurrency(watcher: Watcher, crowded: CrowdedRegistry) -> None:
    poll_in_processes(watcher, crowded, "--max-concurrency", "3")
    # each process alone may have 3 in flight; together they may not either
    assert 2 <= crowded.max_in_flight <= 3


def test_processes_together_stay_within_the_rate_limit(watcher: Watcher, crowded: CrowdedRegistry) -> None:
    crowded.delay = 0.005
    poll_in_processes(watcher, crowded, "--rate-limit", "15")
    starts = sorted(crowded.starts)
    per_second: dict[int, int] = {}
    for start in starts:
        window = int(start - starts[0])
        per_second[window] = per_second.get(window, 0) + 1
    # 4 processes at 15/s each would be ~60/s; together they keep to ~15/s (generous bounds)
    assert len(starts) >= 4 * 22
    assert max(per_second.values()) <= 25, per_second
    assert starts[-1] - starts[0] >= len(starts) / 15 * 0.7


def test_a_429_seen_by_one_process_pauses_the_others(watcher: Watcher) -> None:
    # long polls (4 x 70 requests, 2 in flight): each process alone would still be busy seconds later
    with CrowdedRegistry(owners(PROCESSES, repositories=10, tags=6), delay=0.05) as server:
        server.throttle(after=20, retry_after=3)
        poll_in_processes(watcher, server, "--max-concurrency", "2", tags=60)
    assert server.throttled_at is not None
    quiet = [s for s in server.starts if server.throttled_at + 0.5 < s < server.throttled_at + 2.5]
    after = [s for s in server.starts if s >= server.throttled_at + 2.5]
    assert quiet == []
    assert len(after) >= 20, "the polls had ended before the pause: the test proves nothing"


HOLDER = """
import sys, time
from watcher.http import HostLimits
from watcher.sharedlimits import SharedLimits
with SharedLimits(HostLimits(max_concurrency=1)).held("holder.example:443"):
    print("held", flush=True)
    time.sleep(120)
"""


def free_slots(watcher: Watcher, host: str, limit: int) -> int:
    key = f"{watcher.stream}:limits:{host}:{limit}:0:slots"
    seconds, micros = watcher.redis.time()
    now_ms = seconds * 1000 + micros // 1000
    return limit - len(watcher.redis.zrangebyscore(key, now_ms, "+inf"))


def test_a_crashed_holders_slot_lapses_and_a_live_one_is_renewed(
    watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_LIMIT_LEASE_SECONDS", "2")
    get_settings.cache_clear()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER)], env=watcher.env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        time.sleep(5)  # two and a half leases: renewed all along
        assert free_slots(watcher, "holder.example:443", 1) == 0
        holder.kill()  # no release: the lease must lapse on its own
        holder.wait()
        assert free_slots(watcher, "holder.example:443", 1) == 0
        got = threading.Event()

        def take() -> None:
            with SharedLimits(HostLimits(max_concurrency=1)).held("holder.example:443"):
                got.set()

        threading.Thread(target=take, daemon=True).start()
        assert got.wait(15)
    finally:
        stop_process(holder)


def test_threads_share_the_slots_of_the_host(watcher: Watcher) -> None:
    """The blocking API, as SDK providers call it from threads: 8 threads, 2 slots, counted in Redis."""
    limits = SharedLimits(HostLimits(max_concurrency=2))
    lock = threading.Lock()
    busy: list[int] = [0, 0]  # now, most

    def call() -> None:
        with limits.held("threads.example:443"):
            with lock:
                busy[0] += 1
                busy[1] = max(busy[1], busy[0])
            time.sleep(0.05)
            with lock:
                busy[0] -= 1

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert busy[1] == 2
    assert free_slots(watcher, "threads.example:443", 2) == 2


def test_redis_down_leaves_the_local_limits_with_one_warning(
    watcher: Watcher,
    crowded: CrowdedRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    added = watcher.add_registry("p0", crowded.url, "--repository", "p0/*", "--no-verify", "--max-concurrency", "3")
    assert added.exit_code == 0, added.output
    server = RedisServer(tmp_path)
    server.stop()
    monkeypatch.setenv("WATCHER_REDIS_URL", server.url)
    get_settings.cache_clear()
    with caplog.at_level(logging.WARNING, logger="watcher"):
        result = poll("p0")
    assert result.tags == 16
    warnings = [r.getMessage() for r in caplog.records if "per-host limits" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"127.0.0.1:{server.port}" in warnings[0] and "\n" not in warnings[0]
    assert 2 <= crowded.max_in_flight <= 3


def test_what_an_answer_asks_of_every_process() -> None:
    limits = HostLimits(max_wait_seconds=60)
    assert held_back(200, {}, limits) == (0, 0, 0)
    assert held_back(429, {"retry-after": "3"}, limits) == (3000, 0, 0)
    assert held_back(429, {"retry-after": "600"}, limits) == (60000, 0, 0)
    assert held_back(200, {"ratelimit-remaining": "0;w=20"}, limits) == (20000, 0, 0)
    assert held_back(200, {"ratelimit-remaining": "4;w=20"}, limits) == (5000, 5000, 20000)
