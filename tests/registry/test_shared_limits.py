"""Per-host limits hold for the whole deployment: real `watcher poll` processes against one registry host,
measured where the registry feels them (a fake that records requests in flight and their start times)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import trustme

from tests.conftest import Watcher
from tests.fakes.aad import FakeAad, write_ca
from tests.fakes.crowded_registry import CrowdedRegistry
from tests.fakes.crowded_sdk import CrowdedAcr, CrowdedEcrApi, InFlight
from tests.support.processes import stop_process
from tests.support.redis_server import RedisServer
from watcher.polling.poll import poll
from watcher.registry.hostlimits import HostLimits
from watcher.registry.sharedlimits import SharedLimits, held_back
from watcher.settings import get_settings

PROCESSES = 4
ROOT = Path(__file__).resolve().parents[2]


def owners(count: int, repositories: int, tags: int) -> dict[str, list[str]]:
    """`count` owners (`p0`...), each with its repositories and tags."""
    return {f"p{i}/r{r}": [f"t{t}" for t in range(tags)] for i in range(count) for r in range(repositories)}


@pytest.fixture
def crowded() -> Iterator[CrowdedRegistry]:
    with CrowdedRegistry(owners(PROCESSES, repositories=4, tags=4), delay=0.05) as server:
        yield server


def poll_in_processes(watcher: Watcher, server: CrowdedRegistry, *limits: str, tags: int = 16) -> None:
    """One registry per owner on the same host, each polled by its own `watcher poll` process at once."""
    add_and_poll(watcher, server, server.url, "oci", *limits, tags=tags)


def add_and_poll(
    watcher: Watcher,
    server: CrowdedRegistry | InFlight,
    url: str,
    provider: str,
    *extra: str,
    tags: int = 16,
    env: dict[str, str] | None = None,
) -> None:
    """Registries `p0` ... `p3` of `provider` at `url`, each watching its owner's `pN/*`, polled at once."""
    for i in range(PROCESSES):
        added = watcher.add_registry(f"p{i}", url, "--repository", f"p{i}/*", "--no-verify", *extra, provider=provider)
        assert added.exit_code == 0, added.output
    run_polls(watcher, server, tags=tags, env=env, provider=provider)


#: `watcher poll NAME` (`watcher.cli.main:main`, as the console script runs it), once its modules are
#: imported and a line on stdin says go: imports take seconds on a loaded machine, so processes started
#: one after another would poll one after another, and overlapping polls are what the tests are about
GATED_POLL = """
import importlib, sys
from watcher.cli.main import main
import watcher.polling.poll
importlib.import_module(f"watcher.pollers.{sys.argv[2]}")
print("ready", flush=True)
sys.stdin.readline()
main(["poll", sys.argv[1]])
"""


def run_polls(
    watcher: Watcher,
    server: CrowdedRegistry | InFlight,
    *,
    tags: int,
    env: dict[str, str] | None = None,
    provider: str = "oci",
) -> None:
    """`watcher poll p0` ... `p3` at once, each its own process running this checkout's code: every one is
    started and has imported what it needs before any of them polls."""
    env = watcher.env() | {"PYTHONPATH": str(ROOT)} | (env or {})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GATED_POLL, f"p{i}", provider],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            line = proc.stdout.readline()  # blocks until the process is ready (or has died: then the output)
            assert line == "ready\n", line + proc.stdout.read()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
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
    assert_everyone_paused(server, at_least=20)


def assert_everyone_paused(server: CrowdedRegistry | InFlight, at_least: int) -> None:
    """No process started a request during the 3 s the throttled answer asked for (bar its edges), and
    `at_least` requests came after it, so the polls were still under way."""
    assert server.throttled_at is not None
    quiet = [s for s in server.starts if server.throttled_at + 0.5 < s < server.throttled_at + 2.5]
    after = [s for s in server.starts if s >= server.throttled_at + 2.5]
    assert quiet == []
    assert len(after) >= at_least, "the polls had ended before the pause: the test proves nothing"


HOLDER = """
import sys, time
from watcher.registry.hostlimits import HostLimits
from watcher.registry.sharedlimits import SharedLimits
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
    # an SDK's throttling error (AWS sends a 400 ThrottlingException): the backoff, or the Retry-After if any
    assert held_back(400, {}, limits) == (0, 0, 0)
    assert held_back(400, {}, limits, throttled=True) == (500, 0, 0)
    assert held_back(400, {"retry-after": "2"}, limits, throttled=True) == (2000, 0, 0)


# ---- the SDK-driven providers: boto3 (ECR) and the azure SDK (ACR with Azure AD) -------------------------
ECR_URL = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
ECR_KEYS = ("--access-key", "AKIAWATCHERTEST00001", "--secret-key", "never-shown-secret")
TENANT, CLIENT_ID, CLIENT_SECRET = "72f988bf-0000-4000-8000-000000000001", "watcher-sp", "sp-s3cret-value"
AAD = ("--tenant-id", TENANT, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET)


@dataclass
class SdkRegistry:
    """A crowded fake of one SDK-driven provider, and how `watcher poll` processes reach it."""

    server: InFlight
    url: str
    provider: str
    credentials: tuple[str, ...]
    env: dict[str, str]

    def poll(self, watcher: Watcher, *limits: str) -> None:
        add_and_poll(watcher, self.server, self.url, self.provider, *self.credentials, *limits, env=self.env)


@pytest.fixture(params=["ecr", "acr"])
def sdk_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SdkRegistry]:
    """ECR: the crowded ECR API, with nothing of this machine's AWS set-up. ACR with Azure AD: the crowded
    fake ACR and its fake Azure AD, the azure SDK pointed at them. Either way 16 tags for each owner."""
    if request.param == "ecr":
        with CrowdedEcrApi(owners(PROCESSES, repositories=8, tags=2), delay=0.05) as api:
            aws = {
                "AWS_ENDPOINT_URL_ECR": api.url,
                "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true",
            }
            yield SdkRegistry(api, ECR_URL, "ecr", ECR_KEYS, aws)
        return
    ca = trustme.CA()
    with FakeAad(ca) as aad, CrowdedAcr(ca, aad, delay=0.05) as acr:
        aad.add_app(TENANT, CLIENT_ID, CLIENT_SECRET)
        for repository, tags in owners(PROCESSES, repositories=4, tags=4).items():
            for tag in tags:
                acr.push(repository, tag)
        azure = {
            "AZURE_AUTHORITY_HOST": aad.url,
            "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
            "REQUESTS_CA_BUNDLE": str(write_ca(ca, tmp_path)),
        }
        yield SdkRegistry(acr, acr.url, "acr", AAD, azure)


def test_sdk_polls_in_processes_stay_within_max_concurrency(watcher: Watcher, sdk_registry: SdkRegistry) -> None:
    sdk_registry.poll(watcher, "--max-concurrency", "2")
    # each process alone may have 2 in flight (ACR: its token exchanges too); together they may not either
    # (without the shared slots they reach 4 to 5; a loaded machine may start them too far apart to reach 2)
    assert 1 <= sdk_registry.server.max_in_flight <= 2


def test_sdk_throttling_seen_by_one_process_pauses_the_others(watcher: Watcher, sdk_registry: SdkRegistry) -> None:
    """ECR's 400 ThrottlingException, ACR's 429: every process waits as the answer asked."""
    sdk_registry.server.throttle(after=8, retry_after=3)
    sdk_registry.poll(watcher, "--max-concurrency", "1")
    assert_everyone_paused(sdk_registry.server, at_least=10)


# ---- waiting for a full host costs nothing ----------------------------------------------------------------
def redis_calls(client: redis.Redis) -> int:
    """The round trips the limits have made so far: their scripts (whatever commands run inside) and
    their blocking pops."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha", "blpop"))


def wait_for(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def private_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A Redis of this test's own, so that its command counts are this test's alone."""
    server = RedisServer(tmp_path)
    monkeypatch.setenv("WATCHER_REDIS_URL", server.url)
    get_settings.cache_clear()
    client = redis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        client.close()
        server.stop()
        get_settings.cache_clear()


def holder_waiter(kind: str, url: str) -> tuple[threading.Event, threading.Event, Callable[[], None]]:
    """One SharedLimits holds the only slot of a host until `release` is set; another one (as another
    process would) waits for it, from a thread (`threads`) or an event loop (`async`); `got` says it has it."""
    release, got = threading.Event(), threading.Event()
    host = "127.0.0.1:1" if kind == "threads" else urlsplit(url).netloc

    def hold() -> None:
        with SharedLimits(HostLimits(max_concurrency=1)).held(host):
            holding.set()
            release.wait(30)

    def wait() -> None:
        if kind == "threads":
            with SharedLimits(HostLimits(max_concurrency=1)).held(host):
                got.set()
            return

        async def send() -> None:
            limits = SharedLimits(HostLimits(max_concurrency=1))
            transport = httpx.AsyncHTTPTransport()
            response = await limits.send(transport, httpx.Request("GET", f"{url}/v2/"))
            await response.aclose()
            got.set()
            await transport.aclose()
            await limits.aclose()

        asyncio.run(send())

    holding = threading.Event()
    threading.Thread(target=hold, daemon=True).start()
    assert holding.wait(15)

    def start_waiting() -> None:
        threading.Thread(target=wait, daemon=True).start()

    return release, got, start_waiting


@pytest.mark.parametrize("kind", ["threads", "async"])
def test_waiting_for_a_full_host_does_not_poll_redis(
    watcher: Watcher, private_redis: redis.Redis, crowded: CrowdedRegistry, kind: str
) -> None:
    release, got, start_waiting = holder_waiter(kind, crowded.url)
    before = redis_calls(private_redis)
    start_waiting()
    wait_for(lambda: redis_calls(private_redis) > before)  # the waiter asked, and found the host full
    start = redis_calls(private_redis)
    time.sleep(2.0)  # the window measured: two seconds of waiting
    during = redis_calls(private_redis) - start
    assert not got.is_set()
    # waking by polling asked every 5-25 ms (about a hundred calls here); a wake-up list asks at most once
    # a fallback period (a script and a blocking pop), and the keeper renews nothing this soon
    assert during <= 6, during
    release.set()
    assert got.wait(15)


def test_a_poll_takes_its_slots_in_batches(
    watcher: Watcher, private_redis: redis.Redis, crowded: CrowdedRegistry
) -> None:
    """Slots are leased for a burst of requests and handed from one request to the next in the process,
    not asked of Redis twice a request (which made a fifth of a small poll's CPU)."""
    added = watcher.add_registry("p0", crowded.url, "--repository", "p0/*", "--no-verify", "--max-concurrency", "3")
    assert added.exit_code == 0, added.output
    crowded.delay = 0.002  # a registry close by: the poll's burst of requests fits in a turn or two
    before = redis_calls(private_redis)
    result = poll("p0")
    round_trips = redis_calls(private_redis) - before
    assert result.tags == 16 and result.requests >= 20
    # two scripts a request took 44 here; batches take a handful (more on a loaded machine, as a slow poll
    # spans more turns)
    assert 1 <= round_trips <= result.requests, (round_trips, result.requests)
    assert 2 <= crowded.max_in_flight <= 3
