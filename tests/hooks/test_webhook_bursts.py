"""A burst of notifications: counted in memory and written once a second, and a repository's polls start
at most once per RELIST_SECONDS (the next one waits for the rest of it, and for the burst to settle)."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import broker  # noqa: F401 - fixture
from tests.support.polls import wait_for
from watcher import bus
from watcher.db import session_scope
from watcher.hooks import stats as hookstats
from watcher.models import Registry
from watcher.polling import queue
from watcher.read import counters


def messages(watcher: Watcher, key: str) -> list[dict[str, Any]]:
    """(headers, args) of every message waiting on the queue, oldest first."""
    raw = [json.loads(m) for m in reversed(watcher.redis.lrange(key, 0, -1))]
    return [{**m["headers"], "args": json.loads(base64.b64decode(m["body"]))[0]} for m in raw]


def test_a_poll_queued_just_after_one_started_waits_for_the_rest_of_the_second(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
) -> None:
    assert queue.queue_repository_poll("r1", "team/app") is True
    queue.started("r1", "team/app")  # as the task does when it starts
    assert queue.queue_repository_poll("r1", "team/app") is True  # notified while it lists: queued again
    assert queue.queue_repository_poll("r1", "team/app") is False  # and coalesced from then on
    assert queue.queue_repository_poll("r1", "team/web") is True  # another repository: at once
    first, follow_up, other = messages(watcher, broker)
    assert [m["args"][1] for m in (first, follow_up, other)] == ["team/app", "team/app", "team/web"]
    assert first["eta"] is None and other["eta"] is None
    wait = datetime.fromisoformat(follow_up["eta"]).timestamp() - time.time()
    assert 0.5 < wait <= queue.RELIST_SECONDS


def test_a_poll_queued_once_the_previous_one_finished_or_a_second_passed_starts_at_once(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
) -> None:
    queue.started("r1", "team/app")
    assert 0 < watcher.redis.pttl(queue.started_key("r1", "team/app")) <= 1000 * queue.RELIST_SECONDS
    queue.finished("r1", "team/app")  # as the task does when its poll is done
    assert queue.queue_repository_poll("r1", "team/app") is True
    queue.started("r1", "team/web")
    watcher.redis.delete(queue.started_key("r1", "team/web"))  # a second passed: the mark lapsed
    assert queue.queue_repository_poll("r1", "team/web") is True
    assert [m["eta"] for m in messages(watcher, broker)] == [None, None]


def test_a_hint_in_a_burst_waits_to_settle_even_when_the_last_listing_already_ended(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
) -> None:
    """A small repository's listing ends within milliseconds: the next hint of the same burst must not list it
    at once again (a quiet-machine burst of 1,000 hints listed repositories 3-4 times), while a hint after a
    quiet spell still does."""
    assert queue.hint("r1", ["team/app"]).repositories == {"team/app": queue.AT_ONCE}
    queue.begin("r1", "team/app")  # the task starts: its mark cleared, started
    queue.finished("r1", "team/app")  # ... and its listing ended at once
    assert queue.hint("r1", ["team/app"]).repositories == {"team/app": queue.FOLLOW_UP}
    assert queue.hint("r1", ["team/app"]).repositories == {"team/app": queue.COALESCED}
    first, follow_up = messages(watcher, broker)
    assert first["eta"] is None and follow_up["eta"] is not None

    queue.begin("r1", "team/web")  # a listing of another repository, long after its last hint
    queue.finished("r1", "team/web")
    quiet_since = int(watcher.redis.time()[0] * 1000) - int(queue.QUIET_SECONDS * 1000) - 1
    watcher.redis.set(queue.hinted_key("r1", "team/web"), quiet_since)
    assert queue.hint("r1", ["team/web"]).repositories == {"team/web": queue.AT_ONCE}


def test_the_task_marks_its_repository_finished_whatever_the_outcome(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.tasks.jobs import poll_repository_task

    monkeypatch.setattr(queue, "RELIST_SECONDS", 60.0)  # the mark cannot lapse during the test
    assert watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*").exit_code == 0
    for repository in (f"{unique_repo}/app", "Not/A/Valid/Name"):  # listed (nothing there), and refused
        poll_repository_task.run("r1", repository)  # marks it started, then finished
        assert watcher.redis.exists(queue.started_key("r1", repository)) == 0
    queue.started("r1", "team/app")
    assert watcher.redis.exists(queue.started_key("r1", "team/app")) == 1


def test_notifications_are_counted_in_memory_and_written_together_within_a_second(watcher: Watcher) -> None:
    """No database write per notification: the counts of every notification of the last second are written
    by one transaction, by the flusher thread, without anybody asking."""
    assert watcher.add_registry("r1", "http://127.0.0.1:9", "--no-verify").exit_code == 0
    with session_scope(watcher.engine) as session:
        registry_id = session.scalars(select(Registry.id)).one()
    accepted = hookstats.Outcome(registry_id, "r1", "distribution", "accepted", seen=True)
    refused = hookstats.Outcome(registry_id, "r1", "distribution", "unauthorized", seen=False)
    commits: list[int] = []
    event.listen(watcher.engine, "commit", lambda _conn: commits.append(1))
    outcomes = [refused if i % 4 == 0 else accepted for i in range(20)]
    threads = [threading.Thread(target=hookstats.record, args=(outcome,)) for outcome in outcomes]
    with hookstats._writer:  # a write in progress: every notification meanwhile is only counted in memory
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)  # none waited for the database
        assert sum(hookstats._pending.values()) == 20 and commits == []

    def written() -> dict[str, float]:
        with session_scope(watcher.engine) as session:
            return {labels["outcome"]: value for _, labels, value in counters.read_all(session)}

    assert wait_for(lambda: not hookstats._pending, 2 + 2 * hookstats.FLUSH_SECONDS)  # taken by the flusher
    with hookstats._writer:  # and written
        assert len(commits) == 1
    assert written() == {"accepted": 15, "unauthorized": 5}
    with session_scope(watcher.engine) as session:
        assert session.scalar(select(Registry.last_webhook_at)) is not None
    hookstats.record(accepted)
    hookstats.flush()  # as the app's shutdown does: written at once
    assert written()["accepted"] == 16


def test_every_connect_shares_one_client_and_its_connections(watcher: Watcher) -> None:
    client = bus.connect()
    assert bus.connect() is client
    created = client.connection_pool._created_connections  # earlier tests may have used the pool already
    client.set(f"{queue.queued_key('r1', 'x')}", "1", ex=5)
    assert bus.connect().get(queue.queued_key("r1", "x")) == "1"
    assert client.connection_pool._created_connections == max(created, 1)  # an idle connection, reused


def test_a_follow_up_waits_for_its_repositorys_notifications_to_settle(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst's follow-up listing starts once the repository's hints have been quiet QUIET_SECONDS (or
    SETTLE_MAX_SECONDS after it was queued): a burst costs a listing at its start and one after it."""
    assert queue.hint("r1", ["team/app"]).repositories == {"team/app": queue.AT_ONCE}
    assert queue.begin("r1", "team/app") == 0  # the first poll lists at once, whatever came meanwhile
    assert queue.hint("r1", ["team/app"]).repositories == {"team/app": queue.FOLLOW_UP}  # came while it listed
    for _ in range(5):
        assert queue.hint("r1", ["team/app"]).queued == 0  # coalesced into the follow-up
    wait = queue.begin("r1", "team/app")  # its task's turn comes: the hints are still coming
    assert 0 < wait <= queue.QUIET_SECONDS
    assert watcher.redis.exists(queue.queued_key("r1", "team/app")) == 1  # still queued: hints coalesce
    assert queue.hint("r1", ["team/app"]).queued == 0
    hinted = queue.hinted_key("r1", "team/app")
    quiet_since = int(float(watcher.redis.get(hinted) or 0)) - int(queue.QUIET_SECONDS * 1000) - 1
    watcher.redis.set(hinted, quiet_since)  # as if the last hint came QUIET_SECONDS ago
    assert queue.begin("r1", "team/app") == 0  # settled: it lists now
    assert watcher.redis.exists(queue.queued_key("r1", "team/app")) == 0
    assert queue.hint("r1", ["team/app"]).repositories == {"team/app": queue.FOLLOW_UP}  # the next one

    monkeypatch.setattr(queue, "SETTLE_MAX_SECONDS", 0.0)  # a burst that lasts longer than the settle limit:
    assert queue.hint("r1", ["team/app"]).queued == 0
    assert queue.begin("r1", "team/app") == 0  # listed anyway, once per SETTLE_MAX_SECONDS


def test_a_notification_naming_more_than_100_repositories_queues_one_registry_wide_poll(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
) -> None:
    many = [f"team/app-{i}" for i in range(queue.MAX_REPOSITORIES + 1)]
    assert queue.hint("r1", many) == queue.Hinted({}, whole=True)
    assert queue.hint("r1", many).queued == 0  # queued already: not again
    assert [(m["task"], m["args"]) for m in messages(watcher, broker)] == [("watcher.poll", ["r1"])]
    assert watcher.redis.keys(queue.queued_key("r1", "*")) == []
    queue.whole_started("r1")  # its task starts: a notification from now on queues another
    assert queue.hint("r1", many).queued == 1


def test_the_101st_repository_of_a_registry_within_a_second_queues_a_registry_wide_poll(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
) -> None:
    for attempt in range(5):  # both notifications within the same second (a loaded machine may need another go)
        name = f"r1-{attempt}"
        assert wait_for(lambda: time.time() % 1 < 0.3, 2)
        started = time.time()
        first = queue.hint(name, [f"team/a-{i}" for i in range(60)])
        second = queue.hint(name, [f"team/b-{i}" for i in range(60)])
        if int(time.time()) == int(started):
            break
    assert first.queued == 60 and not first.whole
    assert second == queue.Hinted({}, whole=True)
    assert queue.hint("r2", ["team/a-0"]).queued == 1  # another registry has its own budget
    tasks = [(m["task"], m["args"][0]) for m in messages(watcher, broker) if m["args"][0] in (name, "r2")]
    assert tasks.count(("watcher.poll_repository", name)) == 60 and tasks.count(("watcher.poll", name)) == 1
    assert tasks.count(("watcher.poll_repository", "r2")) == 1 and len(tasks) == 62


def test_a_registry_wide_webhook_poll_waits_for_a_poll_already_running(
    watcher: Watcher,
    broker: str,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its notification came after the running poll began, which may have listed those repositories before:
    it is tried again later (a scheduled poll is dropped), up to BUSY_RETRIES times."""
    from watcher.polling import leases
    from watcher.tasks import jobs

    monkeypatch.setattr(jobs, "BUSY_RETRIES", 2)
    caplog.set_level(logging.INFO, logger="watcher")
    assert watcher.add_registry("r1", "http://127.0.0.1:9", "--no-verify").exit_code == 0
    with session_scope(watcher.engine) as session:
        assert leases.claim(session, session.scalars(select(Registry.id)).one(), "another-worker")
    assert jobs.poll_registry.apply(("r1",), {"trigger": "schedule"}).result == 0
    assert "waits" not in caplog.text  # a scheduled poll of a busy registry is dropped: the next tick comes
    assert jobs.poll_registry.apply(("r1",), {"trigger": "webhook"}).result == 0  # eagerly: retried at once
    assert caplog.text.count("(a webhook's poll of it waits 5s)") == 2
    assert watcher.redis.exists(queue.whole_key("r1")) == 0  # given up: a notification may queue another
