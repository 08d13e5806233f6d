"""Chaos: a worker killed (SIGKILL, its whole process group) in the middle of a poll whose changes move
policies' selections — after the first group of repositories committed its tag events and `selected` events,
before the relay published them and before the second group was listed. A new worker then polls again:
the stream, replayed against the registry, holds every tag event and every `selected` event exactly once,
each selection after its repository's tag events, and none invented."""

from __future__ import annotations

import os
import re
import signal
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.policies.test_selection_doors import Truth, Watched, add_policies, expected, replay
from tests.support.faults import FaultProxy
from tests.support.fixtures import RegistryEnv
from tests.support.polls import runs_of, set_row, wait_for
from watcher import schema
from watcher.models import utcnow
from watcher.outbox.relay import relay
from watcher.polling import poll as polling
from watcher.polling.queue import queue_poll


def selections(watcher: Watcher) -> dict[str, str | None]:
    """Each policy's selected tag, as its row holds it."""
    with watcher.engine.connect() as conn:
        rows = conn.execute(select(schema.policies.c.name, schema.policies.c.selected_tag))
        return {name: tag for name, tag in rows}


def unpublished(watcher: Watcher) -> list[tuple[str, str, str]]:
    """(change, repository, tag) of the events committed but not yet on the stream, in order."""
    events = schema.events.c
    query = select(events.change, events.repository, events.tag).where(events.published_at.is_(None))
    with watcher.engine.connect() as conn:
        return [(c, r.rsplit("/", 1)[1], t) for c, r, t in conn.execute(query.order_by(events.id))]


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # the crash is the same on SQLite: one database is enough
def test_a_worker_killed_between_two_commits_of_a_poll_loses_and_duplicates_no_selection(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, start_worker, worker_queue: str
) -> None:
    names = [f"{unique_repo}/{x}" for x in ("a", "b", "c", "d")]
    truth: Truth = {name: {"1.0.0": registry.client.push_image(name, "1.0.0")} for name in names}
    policies = [
        Watched("a", names[0], {"semver": "^1"}),
        Watched("b", names[1], {"alphabetical": "asc"}),
        Watched("b-digest", names[1], {"digest": "1.0.0"}),
        Watched("c", names[2], {"semver": "^1"}),
        Watched("d", names[3], {"digest": "1.0.0"}),
    ]
    proxy = FaultProxy(registry.url)
    try:
        args = ("--repository", f"{unique_repo}/*", "--emit-existing", "--interval", "1h")
        assert watcher.add_registry("r1", proxy.url, *args).exit_code == 0
        assert add_policies(watcher, "r1", policies) == 0
        set_row(watcher, "r1", next_poll_at=utcnow() + timedelta(hours=1))  # polled when the test says only
        polling.poll("r1")  # the first poll, here: every tag added, every policy's first selection
        relay(watcher.redis)
        baseline = watcher.stream_entries()
        assert [e["change"] for e in baseline] == ["added", "selected"] * 2 + ["selected"] + ["added", "selected"] * 2

        for name, tag in zip(names, ("1.1.0", "zz", "1.1.0", "1.0.0"), strict=True):  # d's 1.0.0: another digest
            truth[name][tag] = registry.client.push_image(name, tag)
        slow = "|".join(re.escape(name) for name in names[2:])
        proxy.add(rf"^/v2/({slow})/tags/list", "delay", seconds=60)  # c and d: the poll's second group
        lock = watcher.redis.lock(f"{watcher.stream}:relay-lock", timeout=60)  # no relay publishes meanwhile
        assert lock.acquire(blocking=False)
        queue_poll("r1")  # "Poll now": the worker takes it as soon as it is up
        worker = start_worker("w1", concurrency=1)
        first_group = {"a": "1.1.0", "b": "zz"}.items()  # listed at once; c and d wait a minute
        assert wait_for(lambda: first_group <= selections(watcher).items(), 60), "a and b were not committed"
        os.killpg(worker.pid, signal.SIGKILL)  # the worker, its pool and its beat: nothing cleans up
        worker.wait(10)
        assert unpublished(watcher) == [  # committed, not published: a's and b's changes and selections only
            ("added", "a", "1.1.0"),
            ("selected", "a", "1.1.0"),
            ("added", "b", "zz"),
            ("selected", "b", "zz"),
        ]
        assert watcher.stream_entries() == baseline
        assert selections(watcher) == {"a": "1.1.0", "b": "zz", "b-digest": "1.0.0", "c": "1.0.0", "d": "1.0.0"}
        lock.release()
        proxy.clear()
        queue_poll("r1")
        start_worker("w2", concurrency=1)
        assert wait_for(lambda: replay(watcher.stream_entries(), policies) == (truth, expected(truth, policies)), 60), [
            (e["change"], e["repository"], e["tag"]) for e in watcher.stream_entries()[len(baseline) :]
        ]
    finally:
        proxy.close()
    entries = watcher.stream_entries()
    assert entries[: len(baseline)] == baseline
    assert [(e["change"], e["repository"].rsplit("/", 1)[1], e["tag"]) for e in entries[len(baseline) :]] == [
        ("added", "a", "1.1.0"),
        ("selected", "a", "1.1.0"),
        ("added", "b", "zz"),
        ("selected", "b", "zz"),
        ("added", "c", "1.1.0"),
        ("selected", "c", "1.1.0"),
        ("updated", "d", "1.0.0"),
        ("selected", "d", "1.0.0"),
    ]
    with watcher.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.events)).scalar() == len(entries)
    runs = runs_of(watcher, "r1")
    assert runs[1].outcome == "abandoned" and "ok" in {r.outcome for r in runs[2:]}, runs
