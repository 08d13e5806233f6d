"""A claim names its holder: one whose holder is known dead (a process of this host that exited, or a pid
now another process's) is taken at once, on the registry and on a fan-out chunk alike; a live holder
still blocks; a holder on another host is waited for until its short lease lapses."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Watcher
from tests.support.faults import FaultProxy
from tests.support.fixtures import RegistryEnv
from tests.support.polls import lease_of, runs_of, try_poll, wait_for
from tests.support.processes import stop_process
from watcher.db import session_scope
from watcher.models import utcnow
from watcher.polling import fanout, leases
from watcher.polling import poll as polling
from watcher.registrations import store as registries
from watcher.registry.hostlimits import HostLimits
from watcher.registry.sharedlimits import SharedLimits
from watcher.runtime import holder
from watcher.settings import get_settings

LONG_MS = 600_000  # a chunk lease no test outlives: what is taken back was known dead, not lapsed


def other_host(token: str) -> str:
    """`token` as a process of another host would name itself: same pid and start, another host."""
    name, pid, start, host, nonce = token.split(":")
    return ":".join((name, pid, start, hashlib.sha256(host.encode()).hexdigest()[:16], nonce))


def reused_pid(token: str) -> str:
    """A holder whose pid is now this (live) process's, which started at another time."""
    name, _, start, host, nonce = token.split(":")
    return ":".join((name, str(os.getpid()), str(int(start) + 1), host, nonce))


def start_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[19])


class Holder:
    """A real process of this host that names itself (`holder.token()`), does `code`, then waits on its
    stdin until killed or closed."""

    def __init__(self, watcher: Watcher, code: str = "") -> None:
        script = f"import sys\nfrom watcher.runtime import holder\n{code}\n"
        script += "print(holder.token(), flush=True)\nsys.stdin.read()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script], env=watcher.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.lines = [self.proc.stdout.readline().strip() for _ in range(2 if code else 1)]
        self.token = self.lines[-1]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def holders(watcher: Watcher) -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for one in made:
        stop_process(one.proc)


def claim_as(watcher: Watcher, name: str, token: str) -> None:
    with session_scope(watcher.engine) as session:
        assert leases.claim(session, registries.find(session, name).id, token)


def add(watcher: Watcher, url: str, prefix: str) -> None:
    added = watcher.add_registry("r1", url, "--repository", f"{prefix}/*", "--interval", "1h")
    assert added.exit_code == 0, added.output


# ---- who holds a claim ---------------------------------------------------------------------------
def test_a_token_names_this_host_this_process_and_its_start_time(watcher: Watcher, holders: list[Holder]) -> None:
    _, pid, start, host, _ = holder.token().split(":")
    assert (int(pid), int(start)) == (os.getpid(), start_ticks(os.getpid()))
    assert len(holder.token()) < 100 and holder.token() != holder.token()  # two claims never share a token
    assert not holder.known_dead(holder.token())
    child = Holder(watcher)
    holders.append(child)
    assert child.token.split(":")[1:4] == [str(child.proc.pid), str(start_ticks(child.proc.pid)), host]
    assert not holder.known_dead(child.token)
    os.kill(child.proc.pid, signal.SIGKILL)
    assert wait_for(lambda: holder.known_dead(child.token), 10)  # a zombie already, not reaped yet
    child.proc.wait(10)
    assert holder.known_dead(child.token)  # no such pid
    assert holder.known_dead(reused_pid(child.token))  # this process's pid, another start time
    assert not holder.known_dead(other_host(child.token))  # can't be checked from here: its lease decides


@pytest.mark.parametrize(
    "token", ["", "vm:123:1a2b3c4d", "a:b:c:d:e", "vm:0:1:{host}:00", "vm:-1:1:{host}:00", "vm:٣:1:{host}:00"]
)
def test_a_holder_that_cannot_be_read_is_never_known_dead(token: str) -> None:
    """An older release's token, or a garbled one: not ours to break, its lease lapses."""
    assert not holder.known_dead(token.format(host=holder.token().split(":")[3]))


# ---- the registry's claim ------------------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_watcher_poll_killed_mid_listing_does_not_block_the_next_one(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither its claim on the registry nor the host's slots its requests held (all 8) hold the next
    `watcher poll` back, though their leases would last 10 minutes."""
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", "600")
    monkeypatch.setenv("WATCHER_LIMIT_LEASE_SECONDS", "600")
    for i in range(12):
        registry.client.push_image(f"{unique_repo}/r{i:02d}", "v1")
    proxy = FaultProxy(registry.url)
    proxy.add(r"/tags/list", "delay", seconds=5)  # the listing is in flight for 5 s
    try:
        add(watcher, proxy.url, unique_repo)
        first = subprocess.Popen(["watcher", "poll", "r1"], env=watcher.env(), stdout=subprocess.PIPE)
        listing = lambda: sum("/tags/list" in path for _, path in proxy.requests) >= 8  # noqa: E731
        assert wait_for(lambda: listing() and lease_of(watcher, "r1") is not None, 30), "the poll never listed"
        killed = lease_of(watcher, "r1")
        first.kill()  # SIGKILL: nothing cleans up, the claim and the slots stay
        first.wait(10)
        proxy.clear()
        assert lease_of(watcher, "r1") == killed
        again = ["watcher", "poll", "r1"]
        second = subprocess.run(again, env=watcher.env(), capture_output=True, text=True, timeout=60)
    finally:
        proxy.close()
    assert second.returncode == 0, second.stderr  # on its first try
    assert "12 repositories" in second.stdout, second.stdout
    runs = runs_of(watcher, "r1")
    assert [r.outcome for r in runs] == ["abandoned", "ok"], runs
    assert lease_of(watcher, "r1") is None


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_live_holder_on_this_host_still_blocks_and_once_dead_does_not(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, holders: list[Holder]
) -> None:
    registry.client.push_image(f"{unique_repo}/a", "v1")
    add(watcher, registry.url, unique_repo)
    live = Holder(watcher)
    holders.append(live)
    claim_as(watcher, "r1", live.token)
    with pytest.raises(polling.Busy):
        polling.poll("r1")  # no double poll
    cli = watcher.cli("poll", "r1")
    assert cli.exit_code != 0 and "is being polled by another worker" in cli.output
    assert lease_of(watcher, "r1") == live.token
    live.kill()
    assert polling.poll("r1").repositories == 1  # at once: well within its lease
    assert lease_of(watcher, "r1") is None


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_pid_reused_by_another_process_does_not_hold_the_registry(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(f"{unique_repo}/a", "v1")
    add(watcher, registry.url, unique_repo)
    claim_as(watcher, "r1", reused_pid(holder.token()))
    assert polling.poll("r1").repositories == 1


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_claim_held_on_another_host_lapses_with_its_lease(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", "2")
    get_settings.cache_clear()
    registry.client.push_image(f"{unique_repo}/a", "v1")
    add(watcher, registry.url, unique_repo)
    claim_as(watcher, "r1", other_host(reused_pid(holder.token())))  # its pid here says nothing of it
    with session_scope(watcher.engine) as session:
        until = registries.find(session, "r1").lease_until
    with pytest.raises(polling.Busy):
        polling.poll("r1")
    assert wait_for(lambda: try_poll("r1"), 10), "the other host's claim never lapsed"
    assert until is not None and utcnow() >= until


def test_the_default_lease_lapses_within_15_seconds_renewed_every_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHER_POLL_LEASE_SECONDS", raising=False)
    get_settings.cache_clear()
    assert leases.lease_length().total_seconds() == 15
    assert leases.Heartbeat(None, 1, "x", "r1").every == 5  # type: ignore[arg-type]


# ---- a fan-out chunk's claim ----------------------------------------------------------------------
@pytest.fixture
def plan(watcher: Watcher) -> fanout.Plan:
    """A plan of two chunks in the test's Redis (run 1), as a split poll writes it."""
    made = fanout.Plan(watcher.redis, 1)
    chunks = [{"names": ["team/a"], "gone": []}, {"names": ["team/b"], "gone": []}]
    made.create(1, holder.token(), False, time.time() + 600, chunks)
    return made


def take(plan: fanout.Plan, token: str, lease_ms: int = LONG_MS) -> int | None:
    taken = plan.take(token, lease_ms)
    return None if taken is None else taken.index


def test_a_chunk_whose_holder_on_this_host_died_is_taken_at_once_and_a_live_one_is_not(
    watcher: Watcher, plan: fanout.Plan, holders: list[Holder]
) -> None:
    code = "import redis\nfrom watcher.polling import fanout\n"
    code += f"plan = fanout.Plan(redis.Redis.from_url({watcher.settings.redis_url!r}), 1)\n"
    code += f"print(plan.take(holder.token(), {LONG_MS}).index, flush=True)"
    live = Holder(watcher, code)
    holders.append(live)
    held = int(live.lines[0])
    mine = holder.token()
    assert take(plan, mine) == 1 - held
    assert take(plan, holder.token()) is None  # the live holder keeps its chunk
    live.kill()
    assert take(plan, mine) == held  # at once, its lease far from lapsed
    assert watcher.redis.hget(plan.takes, str(held)) == "2"


def test_a_chunk_held_by_a_reused_pid_is_taken_at_once(watcher: Watcher, plan: fanout.Plan) -> None:
    assert take(plan, reused_pid(holder.token())) == 0
    assert take(plan, holder.token()) == 0  # taken back first
    assert watcher.redis.hget(plan.takes, "0") == "2"


def test_a_chunk_held_on_another_host_lapses_with_its_lease(watcher: Watcher, plan: fanout.Plan) -> None:
    assert take(plan, other_host(reused_pid(holder.token())), lease_ms=1500) == 0
    assert take(plan, holder.token()) == 1
    lapsed_at = time.time() + 1.5
    assert take(plan, holder.token()) is None
    found: list[int] = []

    def taken() -> bool:
        index = take(plan, holder.token())
        found.extend([] if index is None else [index])
        return bool(found)

    assert wait_for(taken, 10)
    assert found == [0] and time.time() >= lapsed_at - 0.1  # the Redis clock may run a little ahead


@pytest.fixture
def chunks_of_four(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_FANOUT_REPOSITORIES", "4")
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", "60")  # what is taken back before this was known dead
    get_settings.cache_clear()


@pytest.mark.usefixtures("chunks_of_four")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_chunk_whose_helper_is_killed_mid_listing_is_listed_again_at_once(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """A split poll in this process, one helper process (`fanout.help_poll`, as `watcher.poll_chunk` runs
    it) killed while it lists its chunk: the poll takes the chunk back and completes, long before the 60 s
    lease could lapse, and counts every repository once."""
    for i in range(12):
        registry.client.push_image(f"{unique_repo}/r{i:02d}", "v1")
    proxy = FaultProxy(registry.url)
    proxy.add(r"/tags/list", "delay", seconds=2)
    killed: list[float] = []
    helpers: list[subprocess.Popen[str]] = []

    def dispatch(run_id: int, count: int) -> None:
        code = f"from watcher.polling import fanout; print('ready', flush=True); fanout.help_poll('r1', {run_id})"
        helper = subprocess.Popen([sys.executable, "-c", code], env=watcher.env(), stdout=subprocess.PIPE, text=True)
        helpers.append(helper)
        # the helper has imported before the poll goes on, as a worker's would have: on a loaded machine its
        # imports outlasted the poll, which listed every chunk itself ("the helper never held a chunk")
        assert helper.stdout is not None and helper.stdout.readline() == "ready\n"
        plan = fanout.Plan(watcher.redis, run_id)

        def kill_while_listing() -> None:
            pid = str(helper.pid)
            if wait_for(lambda: any(str(t).split(":")[1] == pid for t in watcher.redis.hvals(plan.takers)), 30):
                helper.kill()
                helper.wait(10)
                killed.append(time.monotonic())

        threading.Thread(target=kill_while_listing, daemon=True).start()

    try:
        add(watcher, proxy.url, unique_repo)
        result = polling.poll("r1", dispatch=dispatch)
    finally:
        proxy.close()
        for helper in helpers:
            stop_process(helper)
    assert killed, "the helper never held a chunk"
    assert time.monotonic() - killed[0] < 60
    assert (result.chunks, result.repositories, result.tags, result.event_count) == (3, 12, 12, 0)
    assert runs_of(watcher, "r1")[-1].outcome == "ok"


# ---- a host's deployment-wide slots -----------------------------------------------------------------
def test_the_slots_of_a_killed_holder_on_this_host_are_freed_at_once(
    watcher: Watcher, holders: list[Holder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll killed mid-listing held every slot of its host: the next one waits for none of their leases."""
    monkeypatch.setenv("WATCHER_LIMIT_LEASE_SECONDS", "600")
    get_settings.cache_clear()
    host = f"slots-{os.getpid()}.example:443"
    code = "from watcher.registry.hostlimits import HostLimits\n"
    code += "from watcher.registry.sharedlimits import SharedLimits\n"
    code += f"SharedLimits(HostLimits(max_concurrency=1)).enter({host!r})\nprint('held', flush=True)"
    live = Holder(watcher, code)
    holders.append(live)
    key = f"{watcher.stream}:limits:{host}:1:0:slots"
    process = live.token.rsplit(":", 1)[0]  # its slot's token names the same process (another nonce)
    assert [str(token).rsplit(":", 1)[0] for token in watcher.redis.zrange(key, 0, -1)] == [process]
    limits = SharedLimits(HostLimits(max_concurrency=1))
    got = threading.Event()

    def take() -> None:
        with limits.held(host):
            got.set()

    threading.Thread(target=take, daemon=True).start()
    assert wait_for(lambda: key in limits._swept, 10)  # it looked for dead holders: there was none
    assert not got.is_set() and len(watcher.redis.zrange(key, 0, -1)) == 1
    live.kill()
    assert got.wait(10), "the dead holder's slot was not freed"
