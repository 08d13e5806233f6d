"""A poll of one repository (a webhook's hint): it lists that repository exactly as a full poll would,
emits only what changed, honours the registry's scope, and never double-emits beside a full poll."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.polls import push_round, set_options
from watcher.errors import InputError
from watcher.models import Event
from watcher.outbox.relay import relay
from watcher.polling import poll as polling
from watcher.polling import queue
from watcher.polling.repository import poll_repository


def changes_of(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.repository, e.tag, e.change) for e in events]


def baseline(watcher: Watcher, registry: RegistryEnv, prefix: str) -> None:
    result = watcher.add_registry("r1", registry.url, "--repository", f"{prefix}/*")
    assert result.exit_code == 0, result.output
    polling.poll("r1")


def test_a_pushed_tag_is_added_once_and_a_deleted_one_removed(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    app, other = f"{unique_repo}/app", f"{unique_repo}/other"
    registry.client.push_image(app, "v1")
    registry.client.push_image(other, "v1")
    baseline(watcher, registry, unique_repo)
    registry.client.push_image(app, "v2")
    registry.client.push_image(other, "v2")  # not this poll's repository: left for the next full poll

    result = poll_repository("r1", app)
    assert changes_of(result.events) == [(app, "v2", "added")]
    assert poll_repository("r1", app).events == []

    registry.client.delete(app, "v2")
    assert changes_of(poll_repository("r1", app).events) == [(app, "v2", "removed")]
    assert changes_of(polling.poll("r1").events) == [(other, "v2", "added")]


def test_a_repository_the_registry_no_longer_has_loses_its_tags(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    app = f"{unique_repo}/app"
    registry.client.push_image(app, "v1")
    baseline(watcher, registry, unique_repo)
    registry.client.delete(app, "v1")
    assert changes_of(poll_repository("r1", app).events) == [(app, "v1", "removed")]
    assert poll_repository("r1", f"{unique_repo}/never-pushed").events == []


def test_a_repository_out_of_scope_is_ignored_and_an_invalid_name_refused(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    baseline(watcher, registry, unique_repo)
    outside = f"{unique_repo}-elsewhere/app"
    registry.client.push_image(outside, "v1")
    result = poll_repository("r1", outside)
    assert not result.in_scope and result.events == [] and result.requests == 0

    set_options(watcher, "r1", include_tags="^v")
    registry.client.push_image(f"{unique_repo}/app", "latest")
    assert poll_repository("r1", f"{unique_repo}/app").events == []  # a tag out of scope: nothing

    with pytest.raises(InputError, match="not a valid OCI repository name"):
        poll_repository("r1", "Team/../app")


def test_the_task_publishes_and_queueing_coalesces(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> None:
    from watcher.tasks import app as celery_app  # imported once the installation's settings are set
    from watcher.tasks.jobs import poll_repository_task

    app = f"{unique_repo}/app"
    registry.client.push_image(app, "v1")
    baseline(watcher, registry, unique_repo)
    prefix = celery_app.conf.broker_transport_options["global_keyprefix"]
    watcher.redis.delete(f"{prefix}celery")
    try:
        assert queue.queue_repository_poll("r1", app) is True
        assert queue.queue_repository_poll("r1", app) is False  # already queued: not queued again
        assert queue.queue_repository_poll("r1", f"{unique_repo}/web") is True  # another repository is
        assert watcher.redis.llen(f"{prefix}celery") == 2
    finally:
        watcher.redis.delete(f"{prefix}celery")
    digest = registry.client.push_image(app, "v2")
    assert poll_repository_task.run("r1", app) == 1  # the task clears the mark as it starts
    assert queue.queue_repository_poll("r1", app) is True
    watcher.redis.delete(f"{prefix}celery")
    entries = watcher.stream_entries()
    assert [(e["repository"], e["tag"], e["change"], e["digest"]) for e in entries] == [(app, "v2", "added", digest)]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_full_poll_and_repository_polls_racing_never_double_emit(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    names = [f"{unique_repo}/r{i}" for i in range(6)]
    truth = {name: {"v1": registry.client.push_image(name, "v1")} for name in names}
    baseline(watcher, registry, unique_repo)
    replayed = {name: dict(tags) for name, tags in truth.items()}
    for round_ in range(4):
        push_round(registry.client, truth, round_)
        start = threading.Barrier(1 + 2 * len(names))
        failures: list[BaseException] = []

        def run(
            work: Callable[[], object], start: threading.Barrier = start, failures: list[BaseException] = failures
        ) -> None:
            start.wait()
            try:
                work()
            except BaseException as exc:
                failures.append(exc)

        works = [lambda: polling.poll("r1")] + [
            (lambda name=name: poll_repository("r1", name)) for name in names for _ in range(2)
        ]
        threads = [threading.Thread(target=run, args=(work,)) for work in works]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert all(isinstance(f, polling.PartialPoll) for f in failures), failures
    polling.poll("r1")  # whatever a loser left out, a later poll reports
    relay(watcher.redis)
    changes = [(e["repository"], e["tag"], e["change"], e["digest"]) for e in watcher.stream_entries()]
    assert changes and len(changes) == len(set(changes)), "an event emitted twice"
    ids = [e["event_id"] for e in watcher.stream_entries()]
    assert len(ids) == len(set(ids))
    for repository, tag, change, digest in changes:
        if change == "removed":
            del replayed[repository][tag]
        else:
            replayed.setdefault(repository, {})[tag] = digest
    assert replayed == truth
