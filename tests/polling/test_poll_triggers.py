"""Each poll run says what triggered it: beat's tick (`schedule`), a person (`manual`: `watcher poll`, "Poll
now") or a webhook (`webhook`, naming the repository it listed). A webhook's poll takes no lease, is not
closed by a full poll beside it, and does not make the registry look ok or failing."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.migrations import migrations
from tests.support.polls import runs_of, set_options, set_row
from watcher.db import session_scope
from watcher.errors import InputError
from watcher.models import PollRun, utcnow
from watcher.polling import leases, queue, runs
from watcher.polling import poll as polling
from watcher.polling.repository import poll_repository
from watcher.read.model import registry_statuses
from watcher.registrations import store as registries
from watcher.schema import DEFAULT_WORKSPACE_ID


def triggers(watcher: Watcher) -> list[tuple[str, list[str] | None]]:
    return [(r.trigger, r.listed_repositories) for r in runs_of(watcher, "r1")]


def add(watcher: Watcher, registry: RegistryEnv, prefix: str) -> None:
    result = watcher.add_registry("r1", registry.url, "--repository", f"{prefix}/*")
    assert result.exit_code == 0, result.output


def baselined(watcher: Watcher, registry: RegistryEnv, prefix: str) -> str:
    """`r1` watching `PREFIX/*`, polled once with `PREFIX/app:v1` in it; returns that repository."""
    image = f"{prefix}/app"
    registry.client.push_image(image, "v1")
    add(watcher, registry, prefix)
    polling.poll("r1")
    return image


def queued_message(watcher: Watcher, key: str) -> tuple[str, list[Any], dict[str, Any]]:
    (raw,) = watcher.redis.lrange(key, 0, -1)
    watcher.redis.delete(key)
    message = json.loads(raw)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args, kwargs


def test_schedule_manual_and_webhook_polls_are_told_apart(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    from watcher.tasks import app  # imported once the installation's settings are set
    from watcher.tasks.jobs import poll_registry, poll_repository_task, tick

    key = f"{app.conf.broker_transport_options['global_keyprefix']}celery"
    watcher.redis.delete(key)
    image = f"{unique_repo}/app"
    registry.client.push_image(image, "v1")
    add(watcher, registry, unique_repo)

    assert tick.run() == ["r1"]  # beat's tick: the task as it dispatches it
    task, args, kwargs = queued_message(watcher, key)
    assert poll_registry.run(*args, **kwargs) == 0  # the baseline
    assert watcher.cli("poll", "r1").exit_code == 0
    queue.queue_poll("r1")  # the API's and the console's "Poll now"
    task, args, kwargs = queued_message(watcher, key)
    assert (task, args, kwargs) == ("watcher.poll", ["r1"], {"trigger": "manual"})
    assert poll_registry.run(*args, **kwargs) == 0
    registry.client.push_image(image, "v2")
    assert poll_repository_task.run("r1", image) == 1
    assert triggers(watcher) == [("schedule", None), ("manual", None), ("manual", None), ("webhook", [image])]
    webhook_run = runs_of(watcher, "r1")[-1]
    assert (webhook_run.outcome, webhook_run.repositories, webhook_run.tags, webhook_run.events) == ("ok", 1, 2, 1)
    assert webhook_run.requests >= 1

    shown = json.loads(watcher.cli("registry", "show", "r1", "--json").stdout)
    assert shown["last_poll"]["trigger"] == "manual" and shown["last_poll"]["listed_repositories"] is None
    assert shown["last_webhook_poll"]["trigger"] == "webhook"
    assert shown["last_webhook_poll"]["listed_repositories"] == [image]
    text_shown = watcher.cli("registry", "show", "r1").stdout
    assert "  trigger: webhook" in text_shown and f"  listed_repositories: ['{image}']" in text_shown


def test_a_webhook_poll_takes_no_lease_and_a_full_poll_leaves_its_run_open(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    image = baselined(watcher, registry, unique_repo)
    with session_scope(watcher.engine) as session:
        registry_id = registries.find(session, "r1").id
        assert leases.claim(session, registry_id, "another-worker")
    registry.client.push_image(image, "v2")
    assert [e.tag for e in poll_repository("r1", image).events] == ["v2"]  # beside a full poll holding the lease
    with session_scope(watcher.engine) as session:
        assert registries.find(session, "r1").lease_owner == "another-worker"
        leases.release(session, registry_id, "another-worker")
        in_flight = runs.start_repositories(session, registry_id, [image], "webhook", lapses_after=timedelta(hours=1))
    polling.poll("r1")  # a full poll starting closes only registry-wide runs left running
    assert {r.id: r.outcome for r in runs_of(watcher, "r1")}[in_flight] == "running"
    with session_scope(watcher.engine) as session:  # the worker of that poll died long ago
        session.execute(update(PollRun).where(PollRun.id == in_flight).values(started_at=utcnow() - timedelta(hours=2)))
    poll_repository("r1", image)  # the registry's next repository poll closes it
    lapsed = {r.id: r for r in runs_of(watcher, "r1")}[in_flight]
    assert lapsed.outcome == "abandoned" and "ran past its deadline" in lapsed.error
    assert lapsed.error.endswith(
        "the repositories it committed stay saved, the others are listed again by the next poll"
    )


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_webhook_poll_does_not_count_for_the_registrys_health(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    image = baselined(watcher, registry, unique_repo)
    ok = registry_statuses_of(watcher)
    set_options(watcher, "r1", poll_timeout="soon")  # every poll of it now fails, and says why
    with pytest.raises(InputError, match="poll_timeout"):
        poll_repository("r1", image)
    assert runs_of(watcher, "r1")[-1].outcome == "failed"
    assert registry_statuses_of(watcher) == ok  # still ok, as of its last full poll

    with pytest.raises(InputError):
        polling.poll("r1")
    failing = registry_statuses_of(watcher)
    assert failing["state"] == "failing" and "poll_timeout" in failing["last_error"]
    set_options(watcher, "r1", poll_timeout=30)
    poll_repository("r1", image)
    assert runs_of(watcher, "r1")[-1].outcome == "ok"
    assert registry_statuses_of(watcher) == failing  # still failing, until a full poll succeeds


def registry_statuses_of(watcher: Watcher) -> dict[str, Any]:
    with session_scope(watcher.engine) as session:
        (status,) = registry_statuses(session, ["r1"], workspace_id=DEFAULT_WORKSPACE_ID)
    return status.as_json()


def test_status_shows_each_registrys_last_webhook_or_nothing(watcher: Watcher, registry: RegistryEnv) -> None:
    for name in ("hooked", "plain"):
        assert watcher.add_registry(name, registry.url, "--no-verify").exit_code == 0
    set_row(watcher, "hooked", last_webhook_at=utcnow() - timedelta(minutes=3))
    lines = watcher.cli("status").stdout.splitlines()
    header = lines[0]
    column = header.index("LAST WEBHOOK")
    assert header.index("NEXT POLL") < column < header.index("REPOS")
    rows = lines[1 : lines.index("")]  # the table; the workspace's schedule lag follows a blank line
    cells = {line.split()[0]: line[column : column + len("LAST WEBHOOK")].strip() for line in rows}
    assert cells == {"hooked": "3 min ago", "plain": ""}


def test_runs_from_before_0007_read_as_scheduled_registry_polls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    try:
        with migrations(engine) as schema:
            conn = schema.conn
            schema.up("0006")
            conn.execute(  # a registry as 0006 stored it
                text(
                    "INSERT INTO registries (id, name, provider, url, credentials, options, interval_seconds, "
                    "emit_existing, baselined, revision, next_poll_at, created_at) VALUES (1, 'r1', 'oci', "
                    "'https://r1', '', '{}', 300, 0, 0, 0, '2026-11-30 10:00:00', '2026-11-30 10:00:00')"
                )
            )
            conn.execute(  # a run as 0006 stored it
                text(
                    "INSERT INTO poll_runs (registry_id, started_at, outcome, error, repositories, tags, events, "
                    "requests, ignored) VALUES (1, '2026-11-30 10:00:00', 'ok', '', 1, 1, 0, 2, 0)"
                )
            )
            schema.up("0007")
            assert conn.execute(select(PollRun.trigger, PollRun.listed_repositories)).all() == [("schedule", None)]
            schema.down("0006")
            schema.up("0007")
    finally:
        engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_poll_forgets_its_registrys_oldest_finished_runs_past_the_history_days(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """A few of the oldest at a time (never a scan of a month of runs on every poll), more than a poll adds;
    a run still `running` is not history yet."""
    baselined(watcher, registry, unique_repo)
    long_ago = utcnow() - timedelta(days=31)
    with session_scope(watcher.engine) as session:
        registry_id = registries.find(session, "r1").id
        old = [
            PollRun(registry_id=registry_id, started_at=long_ago, finished_at=long_ago, outcome="ok") for _ in range(20)
        ]
        open_run = PollRun(registry_id=registry_id, started_at=long_ago, listed_repositories=[unique_repo])
        session.add_all([*old, open_run])
        session.flush()
        old_ids, open_id = {run.id for run in old}, open_run.id
    polling.poll("r1")
    left = {run.id for run in runs_of(watcher, "r1")}
    assert len(left & old_ids) == 20 - (runs.PRUNE_AT_ONCE - 1)  # the baseline's run is among the oldest
    polling.poll("r1")
    left = {run.id for run in runs_of(watcher, "r1")}
    assert not left & old_ids and open_id in left
    assert len(left) == 4  # the baseline's, the two polls', and the one running
