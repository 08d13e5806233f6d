"""`watcher run`: Celery beat really dispatches polls, and several workers poll each registry once per slot."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder
from tests.support.polls import lease_of, runs_of, set_row, try_poll, wait_for
from tests.support.signals import LOSE_A_SIGTERM
from tests.support.sitecustom import sitecustomize_path
from watcher.models import PollRun, utcnow
from watcher.settings import get_settings


def poll_runs(watcher: Watcher) -> list[PollRun]:
    with watcher.engine.connect() as conn:
        return list(conn.execute(select(PollRun).order_by(PollRun.id)))  # type: ignore[arg-type]


def test_beat_dispatches_polls_and_events_reach_the_stream(
    watcher: Watcher, registry, unique_repo: str, start_worker, tmp_path: Path
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    add = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*", "--interval", "2s")
    assert add.exit_code == 0, add.output
    start_worker("w1")
    assert wait_for(lambda: any(r.outcome == "ok" for r in poll_runs(watcher)), 60), "no poll was dispatched"
    registry.client.push_image(f"{unique_repo}/app", "v2")
    assert wait_for(lambda: [e["tag"] for e in watcher.stream_entries()] == ["v2"], 30), watcher.stream_entries()
    # it started without Celery's mingle, a second's wait at every start for revokes it never uses
    assert "mingle" not in (tmp_path / "w1.log").read_text()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # several workers share PostgreSQL
def test_two_workers_poll_each_registry_once_per_interval(
    watcher: Watcher, registry, unique_repo: str, start_worker
) -> None:
    interval = 3
    for name in ("a", "b"):
        registry.client.push_image(f"{unique_repo}/{name}/app", "v1")
        add = watcher.add_registry(
            name, registry.url, "--repository", f"{unique_repo}/{name}/*", "--interval", f"{interval}s"
        )
        assert add.exit_code == 0, add.output
    start_worker("w1")
    start_worker("w2")  # each runs its own beat: both tick, each slot is still dispatched once
    assert wait_for(lambda: len(poll_runs(watcher)) >= 2, 60), "no poll was dispatched"
    first = min(r.started_at for r in poll_runs(watcher))
    time.sleep(4 * interval)
    runs = [r for r in poll_runs(watcher) if r.started_at >= first]
    elapsed = max(r.started_at for r in runs) - first
    for registry_id in {r.registry_id for r in runs}:
        mine = sorted(r.started_at for r in runs if r.registry_id == registry_id)
        assert len(mine) >= 3, mine  # the workers kept polling...
        assert len(mine) <= elapsed.total_seconds() / interval + 2, mine  # ...but once per slot, not once per worker
        # every poll that finished went well (the last may still be running when the runs are read)
        assert all(r.outcome == "ok" for r in runs if r.registry_id == registry_id and r.finished_at is not None)


# ---- one registry never holds up another; shutdown and crashes leave nothing behind -------------------
@pytest.fixture
def stuck() -> Iterator[HostileRegistry]:
    """A registry whose tag lists arrive one byte a second: a poll of it takes about 40 s."""
    with Recorder() as recorder, HostileRegistry(recorder) as server:
        yield server


@pytest.fixture
def short_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_MIN_INTERVAL_SECONDS", "1")
    get_settings.cache_clear()


def add_stuck(watcher: Watcher, stuck: HostileRegistry) -> None:
    """`stuck`, polled every 2 s; its first poll (the baseline) hangs on the slow tag lists."""
    added = watcher.add_registry("stuck", stuck.url, "--interval", "2s")
    assert added.exit_code == 0, added.output
    stuck.mode = "slow"


def in_flight(watcher: Watcher, name: str) -> int | None:
    """The id of the registry's run now `running`, if one is."""
    running = [r.id for r in runs_of(watcher, name) if r.outcome == "running"]
    return running[-1] if running else None


@pytest.mark.usefixtures("short_intervals")
def test_a_stuck_registry_and_broken_rows_do_not_hold_up_the_others(
    watcher: Watcher, registry, unique_repo: str, stuck: HostileRegistry, start_worker, tmp_path: Path
) -> None:
    add_stuck(watcher, stuck)
    for name in ("a", "b"):
        registry.client.push_image(f"{unique_repo}/{name}/app", "v1")
        added = watcher.add_registry(name, registry.url, "--repository", f"{unique_repo}/{name}/*", "--interval", "2s")
        assert added.exit_code == 0, added.output
    for name in ("broken", "locked"):
        added = watcher.add_registry(name, registry.url, "--repository", f"{unique_repo}/a/*", "--interval", "2s")
        assert added.exit_code == 0, added.output
    set_row(watcher, "broken", interval_seconds=0)  # a row no form accepts any more
    set_row(watcher, "locked", credentials=Fernet(Fernet.generate_key()).encrypt(b"{}").decode())
    start_worker("w1", concurrency=2)

    assert wait_for(lambda: in_flight(watcher, "stuck") is not None, 60), "the stuck registry was never polled"
    stuck_run = in_flight(watcher, "stuck")
    since = utcnow()

    def polled_on_time(name: str) -> bool:
        return len([r for r in runs_of(watcher, name) if r.started_at >= since and r.outcome == "ok"]) >= 3

    assert wait_for(lambda: polled_on_time("a") and polled_on_time("b"), 25), "the others waited for the stuck one"
    assert in_flight(watcher, "stuck") == stuck_run  # ...while the stuck poll was still in flight
    assert runs_of(watcher, "broken") == []
    assert {r.outcome for r in runs_of(watcher, "locked")} <= {"failed", "running"}
    log = (tmp_path / "w1.log").read_text()
    assert log.count("registry 'broken': not polled: its schedule cannot be computed") == 1
    assert "registry 'locked': credentials cannot be decrypted" in log
    assert "Traceback" not in log


@pytest.mark.usefixtures("short_intervals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_watcher_run_promptly_during_a_stuck_poll(
    watcher: Watcher, stuck: HostileRegistry, start_worker, tmp_path: Path, sig: signal.Signals
) -> None:
    add_stuck(watcher, stuck)
    worker = start_worker("w1", concurrency=1)  # the one pool process is the one stuck
    assert wait_for(lambda: in_flight(watcher, "stuck") is not None, 60), "the stuck registry was never polled"
    time.sleep(1)
    worker.send_signal(sig)
    worker.wait(timeout=20)  # not the ~40 s the slow listing would take
    runs = runs_of(watcher, "stuck")
    assert runs and all(r.outcome == "abandoned" and r.finished_at is not None for r in runs), runs
    assert lease_of(watcher, "stuck") is None
    assert "Traceback" not in (tmp_path / "w1.log").read_text()


@pytest.mark.usefixtures("short_intervals")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_killed_poll_is_abandoned_and_its_registry_claimable_at_once(
    watcher: Watcher, stuck: HostileRegistry, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_POLL_LEASE_SECONDS", "600")  # what is claimed before this was known dead
    get_settings.cache_clear()
    add_stuck(watcher, stuck)
    worker = start_worker("w1", concurrency=1)
    assert wait_for(lambda: in_flight(watcher, "stuck") is not None, 60), "the stuck registry was never polled"
    killed_run = in_flight(watcher, "stuck")
    assert killed_run is not None
    os.killpg(worker.pid, signal.SIGKILL)  # the worker, its pool and its beat: no chance to clean up
    worker.wait(timeout=10)
    stuck.mode = "normal"
    # the dead poll's lease would hold for 10 minutes, but its holder, a process of this host, is gone (a
    # holder on another host is waited for until its lease lapses: tests/polling/test_lease_holders.py)
    assert wait_for(lambda: try_poll("stuck"), 10), "the registry stayed claimed"
    runs = {r.id: r for r in runs_of(watcher, "stuck")}
    assert runs[killed_run].outcome == "abandoned" and "lease lapsed" in runs[killed_run].error
    assert "the repositories it committed stay saved" in runs[killed_run].error
    assert runs[max(runs)].outcome == "ok"


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies, dead but not yet reaped, are not counted)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_a_killed_worker_leaves_no_beat_ticking_behind(
    watcher: Watcher, registry, unique_repo: str, start_worker
) -> None:
    """`watcher run` killed outright (SIGKILL, the OOM killer) takes its embedded beat with it: a beat left
    behind would tick into the broker for ever, beside the next worker's."""
    registry.client.push_image(f"{unique_repo}/app", "v1")
    add = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*", "--interval", "2s")
    assert add.exit_code == 0, add.output
    worker = start_worker("w1", concurrency=1)
    assert wait_for(lambda: any(r.outcome == "ok" for r in poll_runs(watcher)), 60), "the beat never dispatched"
    assert len(group_members(worker.pid)) >= 3  # the worker, its pool process and its beat
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its children are not told
    worker.wait(timeout=10)
    assert wait_for(lambda: not group_members(worker.pid), 15), f"left running: {group_members(worker.pid)}"


#: loaded at the worker's start (as sitecustomize): a SIGTERM arrives while Celery's worker is being set up,
#: before its own handler is in place, and `watcher run`'s handler runs where the SystemExit it raises is lost
LOST_SIGTERM = (
    LOSE_A_SIGTERM
    + """
from celery.signals import celeryd_init

celeryd_init.connect(lambda **_: lose_a_sigterm(), weak=False)
"""
)


def test_a_sigterm_whose_exit_was_lost_during_the_start_still_stops_the_worker(
    watcher: Watcher, tmp_path: Path, start_worker
) -> None:
    """`watcher run` remembers a SIGTERM heard before Celery's handler was in place, and sends it again once
    it is (`watcher.runtime.early_stop`): the worker does a warm shutdown instead of running until killed."""
    path = sitecustomize_path(tmp_path / "site", LOST_SIGTERM, watcher.env().get("PYTHONPATH"))
    worker = start_worker("w1", concurrency=1, env={"PYTHONPATH": path})
    log = tmp_path / "w1.log"
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker never stopped:\n" + log.read_text()[-3000:])
    text = log.read_text()
    assert "Exception ignored" in text and "SystemExit: 143" in text  # the first exit was lost, as meant
    assert "Warm shutdown" in text, text[-3000:]  # Celery heard it the second time, and stopped cleanly


# ---- the pool's size, as the tick sees it ------------------------------------------------------------------
def test_workers_say_their_pool_size_for_the_tick_and_unsay_it_at_shutdown(watcher: Watcher, start_worker) -> None:
    from watcher.polling import pool

    def sizes() -> list[int]:
        return sorted(int(v.split()[0]) for v in watcher.redis.hgetall(pool.workers_key()).values())

    first = start_worker("w1", concurrency=3)
    start_worker("w2", concurrency=1)  # another host's worker, as far as the hash is concerned
    assert wait_for(lambda: sizes() == [1, 3], 60), sizes()
    both = pool.QUEUE_PER_PROCESS * 4  # the two workers' processes added up (a beat's tick may be queued)
    # the beats' ticks queue up while the pools are still starting (a loaded machine: a second's tick from
    # each beat for many seconds), so the room is the two pools' once they have taken what was queued
    assert wait_for(lambda: both - 10 <= pool.room(watcher.redis) <= both, 30), pool.room(watcher.redis)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    assert wait_for(lambda: sizes() == [1], 10), sizes()
