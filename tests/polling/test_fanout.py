"""Fan-out: a big registry is listed in chunks by every free worker, as one poll that completes when all
chunks have; repositories stay atomic, a failed repository is named, a killed worker's chunk is listed
again, and the stream replays to the registry."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Watcher
from tests.polling.test_repository_polls import snapshot_of, stream_changes
from tests.support.faults import FaultProxy
from tests.support.fixtures import RegistryEnv
from tests.support.polls import lease_of, runs_of, wait_for
from watcher.models import PollRun, utcnow
from watcher.outbox.relay import relay
from watcher.polling import fanout
from watcher.polling import poll as polling
from watcher.settings import get_settings

Truth = dict[str, dict[str, str]]


@pytest.fixture
def chunks_of_four(monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog of more than 4 repositories is split, 4 to a chunk (for this process and the workers)."""
    monkeypatch.setenv("WATCHER_FANOUT_REPOSITORIES", "4")
    get_settings.cache_clear()


def push(registry: RegistryEnv, prefix: str, count: int) -> tuple[list[str], Truth]:
    names = [f"{prefix}/r{i:02d}" for i in range(count)]
    return names, {name: {"v1": registry.client.push_image(name, "v1")} for name in names}


def add(watcher: Watcher, url: str, prefix: str, interval: str) -> None:
    added = watcher.add_registry("r1", url, "--repository", f"{prefix}/*", "--emit-existing", "--interval", interval)
    assert added.exit_code == 0, added.output


def replayed(watcher: Watcher) -> Truth:
    """The registry as the stream tells it, from nothing (the registries emit their existing tags)."""
    changes = stream_changes(watcher)
    assert len(changes) == len(set(changes)), "an event emitted twice"
    state: Truth = {}
    for repository, tag, change, digest in changes:
        if change == "removed":
            del state[repository][tag]
        else:
            state.setdefault(repository, {})[tag] = digest
    return {repository: tags for repository, tags in state.items() if tags}


def finished(watcher: Watcher) -> list[PollRun]:
    return [r for r in runs_of(watcher, "r1") if r.outcome != "running"]


def chunk_lines(log: Path) -> list[str]:
    """The lines saying this worker listed chunks: a helper's, or a split poll's own (with a count > 0)."""
    text = log.read_text()
    helped = re.findall(r"\d+ chunks? of poll run \d+ listed here", text)
    own = [m for m in re.findall(r"chunks \((\d+) listed here\)", text) if int(m)]
    return helped + own


# ---- in one process -------------------------------------------------------------------------------
@pytest.mark.usefixtures("chunks_of_four")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_split_poll_shares_its_chunks_with_helpers_and_counts_each_once(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """The poll's process and two helpers (threads here) list the 10 repositories' 3 chunks between them;
    the run counts every repository and event once; `watcher poll` (no dispatch) lists every chunk itself."""
    names, truth = push(registry, unique_repo, 10)
    add(watcher, registry.url, unique_repo, "1h")
    helpers: list[threading.Thread] = []
    helped: list[fanout.Helped] = []

    def dispatch(run_id: int, count: int) -> None:
        assert count == 2
        for _ in range(count):
            helpers.append(threading.Thread(target=lambda: helped.append(fanout.help_poll("r1", run_id))))
            helpers[-1].start()

    result = polling.poll("r1", dispatch=dispatch)
    for helper in helpers:
        helper.join(30)
    assert (result.chunks, result.repositories, result.tags, result.event_count) == (3, 10, 10, 10)
    assert result.chunks_here + sum(h.chunks for h in helped) == 3
    assert len(result.events) + sum(h.events for h in helped) == 10
    run = runs_of(watcher, "r1")[-1]
    assert (run.outcome, run.repositories, run.events) == ("ok", 10, 10)
    assert lease_of(watcher, "r1") is None

    for name in names[:5]:
        truth[name]["v2"] = registry.client.push_image(name, "v2")
    cli = watcher.cli("poll", "r1")  # in process, no workers: not split
    assert cli.exit_code == 0, cli.output
    assert "5 events" in cli.stdout
    relay(watcher.redis)
    assert replayed(watcher) == truth == snapshot_of(watcher)


# ---- with two worker processes --------------------------------------------------------------------
@pytest.mark.usefixtures("chunks_of_four")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_two_workers_share_a_big_registry_and_the_stream_replays_it(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, start_worker, tmp_path: Path
) -> None:
    names, truth = push(registry, unique_repo, 24)
    proxy = FaultProxy(registry.url)  # each tag list takes 0.3 s: a chunk is long enough to share
    proxy.add(r"/tags/list", "delay", seconds=0.3)
    try:
        add(watcher, proxy.url, unique_repo, "3s")
        start_worker("w1", concurrency=1)
        start_worker("w2", concurrency=1)
        assert wait_for(lambda: any(r.outcome == "ok" for r in finished(watcher)), 50), runs_of(watcher, "r1")
        for i, name in enumerate(names[:8]):
            truth[name]["v2" if i % 2 else "v1"] = registry.client.push_image(name, "v2" if i % 2 else "v1")
        since = utcnow()
        assert wait_for(lambda: any(r.started_at >= since and r.outcome == "ok" for r in finished(watcher)), 30)
    finally:
        proxy.close()
    runs = finished(watcher)
    assert {r.outcome for r in runs} == {"ok"} and {r.repositories for r in runs} == {24}, runs
    assert wait_for(lambda: replayed(watcher) == truth, 10), "the stream does not replay to the registry"
    assert sum(r.events for r in runs) == len(stream_changes(watcher)) == 24 + 8
    for worker in ("w1", "w2"):
        assert chunk_lines(tmp_path / f"{worker}.log"), f"{worker} listed no chunk"
        assert "Traceback" not in (tmp_path / f"{worker}.log").read_text()


@pytest.mark.usefixtures("chunks_of_four")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_failed_repository_of_a_chunk_keeps_its_snapshot_while_the_others_report(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, start_worker
) -> None:
    names, truth = push(registry, unique_repo, 16)
    broken = names[9]
    proxy = FaultProxy(registry.url)
    try:
        add(watcher, proxy.url, unique_repo, "2s")
        start_worker("w1", concurrency=1)
        start_worker("w2", concurrency=1)
        assert wait_for(lambda: any(r.outcome == "ok" for r in finished(watcher)), 50), runs_of(watcher, "r1")
        before = snapshot_of(watcher)[broken]
        proxy.add(rf"^/v2/{broken}/tags/list", "status", status=500, headers={"Retry-After": "0"})
        moved = {name: registry.client.push_image(name, "v2") for name in names}
        since = utcnow()
        assert wait_for(lambda: any(r.started_at >= since for r in finished(watcher)), 30), runs_of(watcher, "r1")
        failed = [r for r in finished(watcher) if r.outcome == "failed"]
        assert failed and all(
            r.error.startswith(f"1 of 16 repositories failed: {broken} (bad response") for r in failed
        ), failed
        assert sum(r.events for r in failed) == 15 and failed[-1].repositories == 15
        assert snapshot_of(watcher)[broken] == before
        relay(watcher.redis)
        v2 = [(repository, tag) for repository, tag, _, _ in stream_changes(watcher) if tag == "v2"]
        assert sorted(v2) == [(name, "v2") for name in names if name != broken]
        proxy.clear()
        assert wait_for(lambda: finished(watcher)[-1].outcome == "ok" and finished(watcher)[-1].id > failed[-1].id, 30)
    finally:
        proxy.close()
    for name in names:
        truth[name]["v2"] = moved[name]
    assert wait_for(lambda: replayed(watcher) == truth, 10), "the stream does not replay to the registry"


@pytest.mark.usefixtures("chunks_of_four")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_chunk_whose_worker_is_killed_is_listed_again_and_the_poll_completes(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", "5")  # 60 s in production: a chunk lapses that soon
    get_settings.cache_clear()
    _, truth = push(registry, unique_repo, 16)
    proxy = FaultProxy(registry.url)
    proxy.add(r"/tags/list", "delay", seconds=1.5)  # a chunk takes about 1.5 s: time to kill its worker
    try:
        add(watcher, proxy.url, unique_repo, "1h")
        workers = {w.pid: w for w in (start_worker("w1", concurrency=1), start_worker("w2", concurrency=1))}
        assert wait_for(lambda: lease_of(watcher, "r1") is not None, 40), "no poll started"
        poll_run = runs_of(watcher, "r1")[-1]
        coordinator = int((lease_of(watcher, "r1") or "::").split(":")[1])
        plan = fanout.Plan(watcher.redis, poll_run.id)
        victim: list[int] = []

        def helper_holds_a_chunk() -> bool:
            takers = {int(str(token).split(":")[1]) for token in watcher.redis.hvals(plan.takers)}
            victim[:] = [os.getpgid(pid) for pid in takers if pid != coordinator]
            return bool(victim)

        assert wait_for(helper_holds_a_chunk, 30), "no other worker took a chunk"
        os.killpg(victim[0], signal.SIGKILL)  # the worker, its pool and its beat: nothing cleans up
        workers[victim[0]].wait(10)
        killed_at = time.monotonic()
        assert wait_for(lambda: runs_of(watcher, "r1")[-1].outcome != "running", 40)
    finally:
        proxy.close()
    runs = runs_of(watcher, "r1")
    assert [(r.id, r.outcome, r.repositories, r.events) for r in runs] == [(poll_run.id, "ok", 16, 16)]
    assert time.monotonic() - killed_at < 30
    assert wait_for(lambda: replayed(watcher) == truth, 10), "the stream does not replay to the registry"
    assert len(stream_changes(watcher)) == 16
