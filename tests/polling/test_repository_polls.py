"""Polls commit repository at a time: a failed repository keeps its snapshot while the others commit, an
unchanged repository is not read (its fingerprint), writes are bulk, and racing polls never double-emit."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from tests.conftest import Watcher
from tests.fakes.hostile_registry import HostileRegistry, Recorder, digest_of
from tests.support.faults import FaultProxy
from tests.support.fixtures import RegistryEnv
from tests.support.polls import push_round, runs_of, set_options
from tests.support.sqlcount import sent
from watcher.db import session_scope
from watcher.models import Event, Repository
from watcher.outbox import relay as relays
from watcher.outbox.relay import relay
from watcher.pollers.base import Poller
from watcher.polling import leases, pipeline, saving
from watcher.polling import poll as polling
from watcher.polling.snapshot import load_snapshot
from watcher.registrations import store as registries
from watcher.registrations.scope import Scope
from watcher.registry.deadline import DeadlineExceeded


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the engine sends while the block runs (an executemany is one), with its parameters."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((" ".join(statement.split()), parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def on_table(seen: list[tuple[str, Any]], verb: str, table: str) -> list[tuple[str, Any]]:
    """The statements of one kind on one table: `SELECT ... FROM tags`, `UPDATE events`, `INSERT INTO tags`."""
    where = {"SELECT": f" FROM {table} ", "UPDATE": f"UPDATE {table} ", "INSERT": f"INSERT INTO {table} "}[verb]
    return [(s, p) for s, p in seen if s.startswith(verb) and where in s + " "]


def snapshot_of(watcher: Watcher, name: str = "r1") -> dict[str, dict[str, str]]:
    with session_scope(watcher.engine) as session:
        listing, _ = load_snapshot(session, registries.find(session, name).id)
    return {repo: {tag: state.digest for tag, state in tags.items()} for repo, tags in listing.items()}


def stream_changes(watcher: Watcher) -> list[tuple[str, str, str, str]]:
    """What the stream says changed; every entry is of the registry `r1` of the workspace `default`."""
    entries = watcher.stream_entries()
    for entry in entries:
        assert (entry["workspace"], entry["registry"]) == ("default", "r1")
        assert json.loads(entry["cloudevent"])["source"] == "/watcher/workspaces/default/registries/r1"
    return [(e["repository"], e["tag"], e["change"], e["digest"]) for e in entries]


def add(watcher: Watcher, url: str, scope: str, *extra: str) -> None:
    result = watcher.add_registry("r1", url, "--repository", f"{scope}/*", *extra)
    assert result.exit_code == 0, result.output


# ---- a repository that fails ------------------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_repository_whose_listing_fails_keeps_its_snapshot_while_the_others_commit(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    for repo in ("a", "b", "c"):
        registry.client.push_image(f"{unique_repo}/{repo}", "v1")
    proxy = FaultProxy(registry.url)
    try:
        add(watcher, proxy.url, unique_repo)
        assert watcher.cli("poll", "r1").exit_code == 0
        pushed = {repo: registry.client.push_image(f"{unique_repo}/{repo}", "v2") for repo in ("a", "b", "c")}
        before = snapshot_of(watcher)[f"{unique_repo}/b"]
        proxy.add(rf"^/v2/{unique_repo}/b/tags/list", "status", status=500, headers={"Retry-After": "0"})

        failed = watcher.cli("poll", "r1")
        assert failed.exit_code == 1
        lines = failed.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in failed.output
        assert lines[0].startswith(f"watcher: registry 'r1': 1 of 3 repositories failed: {unique_repo}/b (bad response")
        assert lines[0].endswith("; the others were saved"), lines[0]
        assert sorted(stream_changes(watcher)) == [
            (f"{unique_repo}/a", "v2", "added", pushed["a"]),
            (f"{unique_repo}/c", "v2", "added", pushed["c"]),
        ]
        assert snapshot_of(watcher)[f"{unique_repo}/b"] == before  # kept as it was
        run = runs_of(watcher, "r1")[-1]
        assert (run.outcome, run.events) == ("failed", 2)
        assert run.error.startswith(f"1 of 3 repositories failed: {unique_repo}/b (bad response")
        status = json.loads(watcher.cli("status", "--json").stdout)[0]
        assert status["state"] == "failing" and status["last_error"] == run.error

        proxy.clear()
        fixed = watcher.cli("poll", "r1")
        assert fixed.exit_code == 0, fixed.output
        assert sorted(stream_changes(watcher)) == sorted(
            (f"{unique_repo}/{repo}", "v2", "added", pushed[repo]) for repo in ("a", "b", "c")
        )  # b's change once, a's and c's not again
        assert runs_of(watcher, "r1")[-1].outcome == "ok"
    finally:
        proxy.close()


def test_the_celery_task_logs_one_line_naming_the_failed_repository_and_publishes_the_rest(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, caplog: pytest.LogCaptureFixture
) -> None:
    from watcher.tasks.jobs import poll_registry

    for repo in ("a", "b"):
        registry.client.push_image(f"{unique_repo}/{repo}", "v1")
    proxy = FaultProxy(registry.url)
    try:
        add(watcher, proxy.url, unique_repo)
        assert poll_registry("r1") == 0
        for repo in ("a", "b"):
            registry.client.push_image(f"{unique_repo}/{repo}", "v2")
        proxy.add(rf"^/v2/{unique_repo}/b/tags/list", "status", status=502, headers={"Retry-After": "0"})
        with caplog.at_level(logging.INFO, logger="watcher"):
            assert poll_registry("r1") == 1  # the Celery task: no exception, no retry storm
    finally:
        proxy.close()
    records = [r for r in caplog.records if r.name == "watcher"]
    assert len(records) == 1 and not records[0].exc_info
    assert records[0].levelno == logging.WARNING
    assert records[0].getMessage().startswith(f"registry 'r1': 1 of 2 repositories failed: {unique_repo}/b (")
    assert records[0].getMessage().endswith("; the others were saved (events saved: 1)")
    fields = records[0].fields  # type: ignore[attr-defined]
    assert (fields["outcome"], fields["failed_repositories"], fields["events"]) == ("failed", 1, 1)
    assert [(e["repository"], e["tag"]) for e in watcher.stream_entries()] == [(f"{unique_repo}/a", "v2")]


def test_every_repository_failing_is_the_registry_failing(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """With no repository listed, the poll fails as a whole registry does, with the registry's own error."""
    registry.client.push_image(f"{unique_repo}/a", "v1")
    proxy = FaultProxy(registry.url)
    try:
        add(watcher, proxy.url, unique_repo)
        proxy.add(r"/tags/list", "status", status=503, headers={"Retry-After": "0"})
        failed = watcher.cli("poll", "r1")
        assert failed.exit_code == 1
        assert failed.stderr.startswith("watcher: registry 'r1': bad response: ")
        assert runs_of(watcher, "r1")[-1].outcome == "failed"
        proxy.clear()
        assert watcher.cli("poll", "r1", "--json").exit_code == 0  # still the baseline: no event
        assert watcher.stream_entries() == []
    finally:
        proxy.close()


def test_a_baseline_completes_only_when_every_repository_was_listed(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """A repository that failed the first poll is recorded silently when it is first listed, not `added`;
    one recorded by that first poll reports its changes from then on."""
    for repo in ("a", "b"):
        registry.client.push_image(f"{unique_repo}/{repo}", "v1")
    proxy = FaultProxy(registry.url)
    try:
        add(watcher, proxy.url, unique_repo)
        proxy.add(rf"^/v2/{unique_repo}/b/tags/list", "status", status=500, headers={"Retry-After": "0"})
        assert watcher.cli("poll", "r1").exit_code == 1
        proxy.clear()
        moved = registry.client.push_image(f"{unique_repo}/a", "v1", seed="moved")
        assert watcher.cli("poll", "r1").exit_code == 0
        assert [(e["repository"], e["tag"], e["change"], e["digest"]) for e in watcher.stream_entries()] == [
            (f"{unique_repo}/a", "v1", "updated", moved)
        ]
        assert set(snapshot_of(watcher)) == {f"{unique_repo}/a", f"{unique_repo}/b"}
    finally:
        proxy.close()


# ---- the fingerprint --------------------------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_one_changed_repository_among_20_is_the_only_one_whose_tags_are_read(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    names = [f"{unique_repo}/r{i:03d}" for i in range(20)]
    digest = next(iter({registry.client.push_image(name, "v1", seed="same") for name in names}))
    add(watcher, registry.url, unique_repo)
    assert polling.poll("r1").repositories == 20

    with statements(watcher.engine) as seen:
        steady = polling.poll("r1")
    assert (steady.repositories, steady.tags, steady.events) == (20, 20, [])
    assert on_table(seen, "SELECT", "tags") == []  # nothing read: every fingerprint matched
    assert not [s for s, _ in seen if s.startswith(("INSERT INTO tags", "UPDATE tags", "DELETE FROM tags"))]

    changed = names[13]
    moved = registry.client.push_image(changed, "v1", seed="moved")
    with session_scope(watcher.engine) as session:
        changed_id = session.scalar(select(Repository.id).where(Repository.name == changed))
    with statements(watcher.engine) as seen:
        result = polling.poll("r1")
    assert [(e.repository, e.tag, e.change, e.digest, e.previous_digest) for e in result.events] == [
        (changed, "v1", "updated", moved, digest)
    ]
    reads = on_table(seen, "SELECT", "tags")
    assert len(reads) == 1, reads
    assert changed_id in _values(reads[0][1]) and len(_values(reads[0][1])) == 1, reads
    assert len(on_table(seen, "UPDATE", "tags")) == 1


def _values(parameters: Any) -> list[Any]:
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return [v for v in values if isinstance(v, int)]


def test_a_repository_stored_before_fingerprints_is_null_and_simply_re_diffed(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    add(watcher, registry.url, unique_repo)
    polling.poll("r1")
    with session_scope(watcher.engine) as session:
        for row in session.scalars(select(Repository)):
            row.fingerprint = None
    with statements(watcher.engine) as seen:
        assert polling.poll("r1").events == []
    assert len(on_table(seen, "SELECT", "tags")) == 1
    with statements(watcher.engine) as seen:
        assert polling.poll("r1").events == []
    assert on_table(seen, "SELECT", "tags") == []  # stored again


# ---- bulk writes ------------------------------------------------------------------------------------
@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with Recorder() as recorder, HostileRegistry(recorder) as server:
        yield server


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_repository_of_300_tags_is_written_in_one_statement_per_kind(
    watcher: Watcher, hostile: HostileRegistry
) -> None:
    hostile.repositories = {"team/big": {f"t{i:03d}": digest_of(f"t{i}") for i in range(300)}}
    assert watcher.add_registry("r1", hostile.url, "--emit-existing").exit_code == 0
    with statements(watcher.engine) as seen:
        assert len(polling.poll("r1").events) == 300
    assert len(on_table(seen, "INSERT", "tags")) == 1
    assert len(on_table(seen, "INSERT", "events")) == 1

    hostile.repositories["team/big"] = {f"t{i:03d}": digest_of(f"moved {i}") for i in range(150, 450)}
    with statements(watcher.engine) as seen:
        result = polling.poll("r1")
    assert sorted({e.change for e in result.events}) == ["added", "removed", "updated"]
    assert len(result.events) == 450
    assert [len(on_table(seen, verb, "tags")) for verb in ("SELECT", "INSERT", "UPDATE")] == [1, 1, 1]
    assert len([s for s, _ in seen if s.startswith("DELETE FROM tags")]) == 1
    assert len(on_table(seen, "INSERT", "events")) == 1
    assert snapshot_of(watcher) == {"team/big": hostile.repositories["team/big"]}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_small_registrys_repositories_commit_together_not_one_transaction_each(
    watcher: Watcher, hostile: HostileRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline of 10 repositories committed each as it was listed: ~7 transactions, most of what a
    baseline cost more than a steady poll. The writer takes a group once the listing is done (or the first
    of it waited GROUP_SECONDS: made long here, however slow the machine)."""
    monkeypatch.setattr(pipeline, "GROUP_SECONDS", 60.0)
    names = [f"team/r{i}" for i in range(10)]
    hostile.repositories = {name: {f"t{j}": digest_of(f"{name} {j}") for j in range(3)} for name in names}
    assert watcher.add_registry("r1", hostile.url).exit_code == 0
    with statements(watcher.engine) as seen:
        baseline = polling.poll("r1")
    assert (baseline.baseline, baseline.repositories, baseline.tags, baseline.events) == (True, 10, 30, [])
    assert len(on_table(seen, "INSERT", "tags")) == 1  # one group: one bulk INSERT of its tags

    hostile.repositories = {name: {f"t{j}": digest_of(f"{name} {j} moved") for j in range(3)} for name in names}
    with statements(watcher.engine) as seen:
        assert len(polling.poll("r1").events) == 30
    assert [len(on_table(seen, "UPDATE", table)) for table in ("repositories", "tags")] == [1, 1]
    assert len(on_table(seen, "INSERT", "events")) == 1
    assert snapshot_of(watcher) == hostile.repositories


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_steady_poll_is_two_transactions_of_its_claim_run_lease_and_counters(
    watcher: Watcher, hostile: HostileRegistry
) -> None:
    """A poll that changes nothing writes nothing of the snapshot, and at a thousand registries a minute its
    commits and statements were most of PostgreSQL's CPU (issue 13): it claims the registry, opens its run
    and reads the stored repositories in one transaction, and closes it all in one more."""
    names = [f"team/r{i}" for i in range(10)]
    hostile.repositories = {name: {f"t{j}": digest_of(f"{name} {j}") for j in range(3)} for name in names}
    assert watcher.add_registry("r1", hostile.url).exit_code == 0
    polling.poll("r1")
    with sent(watcher.engine) as seen:
        steady = polling.poll("r1")
    assert (steady.repositories, steady.tags, steady.events) == (10, 30, [])
    not_flushed = ["SET"] if watcher.engine.dialect.name == "postgresql" else []  # `bookkeeping`: no WAL wait
    assert seen.verbs() == [
        *not_flushed,
        "SELECT",  # the registry
        "UPDATE registries",  # its lease, taken
        "DELETE FROM poll_runs",  # its history, pruned
        "INSERT INTO poll_runs",  # its run
        "SELECT",  # the stored repositories
        *not_flushed,
        "INSERT INTO counters",  # one statement for them all
        "UPDATE poll_runs",  # its run, closed
        "UPDATE registries",  # its lease, given back
    ]
    assert seen.commits == 2


def test_a_repository_gone_from_the_catalog_has_its_tags_removed(watcher: Watcher, hostile: HostileRegistry) -> None:
    """(The real registry keeps a repository in its catalog for ever, hence the fake.)"""
    assert watcher.add_registry("r1", hostile.url).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    app = hostile.repositories.pop("team/app")
    result = watcher.cli("poll", "r1")
    assert result.exit_code == 0, result.output
    assert sorted(stream_changes(watcher)) == [
        ("team/app", tag, "removed", digest) for tag, digest in sorted(app.items())
    ]
    assert set(snapshot_of(watcher)) == {"team/web"}


def test_a_relay_batch_is_marked_published_with_one_update(
    watcher: Watcher, hostile: HostileRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relays, "BATCH", 50)  # batches of 500 behave alike, at ten times the tags to poll
    events = relays.BATCH + 10
    hostile.repositories = {"team/big": {f"t{i:04d}": digest_of(f"t{i}") for i in range(events)}}
    assert watcher.add_registry("r1", hostile.url, "--emit-existing").exit_code == 0
    assert len(polling.poll("r1").events) == events
    with statements(watcher.engine) as seen:
        assert relay(watcher.redis) == events
    assert len(on_table(seen, "UPDATE", "events")) == 2  # two batches, one UPDATE each
    assert len(watcher.stream_entries()) == events
    with session_scope(watcher.engine) as session:
        assert session.scalar(select(Event.id).where(Event.stream_id.is_(None))) is None


# ---- the deadline -----------------------------------------------------------------------------------
def test_a_deadline_after_some_repositories_committed_keeps_them_and_says_so(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for repo in ("a", "b", "c"):
        registry.client.push_image(f"{unique_repo}/{repo}", "v1")
    add(watcher, registry.url, unique_repo)
    polling.poll("r1")
    for repo in ("a", "b", "c"):
        registry.client.push_image(f"{unique_repo}/{repo}", "v2")
    listed = Poller.repository_tags
    stuck = threading.Event()

    async def slow_for_b(self: Poller, repository: str, scope: Scope) -> Any:
        if repository.endswith("/b"):
            import asyncio

            stuck.set()
            await asyncio.sleep(60)  # a repository whose listing never ends
        return await listed(self, repository, scope)

    monkeypatch.setattr(Poller, "repository_tags", slow_for_b)
    set_options(watcher, "r1", poll_timeout=2)
    with pytest.raises(DeadlineExceeded) as raised:
        polling.poll("r1")
    assert stuck.is_set()
    assert str(raised.value) == (
        "registry 'r1': too slow: the poll exceeded its 2s deadline (--poll-timeout); "
        "2 of 3 repositories were saved before it, the others were not"
    )
    history = [json.loads(line) for line in watcher.cli("events", "--json").stdout.splitlines()]
    assert sorted((e["repository"][-1], e["change"]) for e in history) == [("a", "added"), ("c", "added")]
    assert runs_of(watcher, "r1")[-1].outcome == "failed"
    monkeypatch.undo()
    assert [(e.repository[-1], e.tag) for e in polling.poll("r1").events] == [("b", "v2")]


# ---- racing polls -----------------------------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_two_racing_polls_never_both_commit_one_repository(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two polls of one registry at once (as when a lease lapsed, or a webhook's poll meets a scheduled
    one): no change is emitted twice, and replaying the stream over the baseline gives the registry."""
    names = [f"{unique_repo}/r{i:02d}" for i in range(30)]
    truth = {name: {"v1": registry.client.push_image(name, "v1")} for name in names}
    add(watcher, registry.url, unique_repo)
    polling.poll("r1")
    replayed = snapshot_of(watcher)
    monkeypatch.setattr(leases, "claim", lambda *_args: True)  # both polls hold "the" lease
    monkeypatch.setattr(pipeline, "CHUNK_REPOSITORIES", 3)  # many small commits: many chances to interleave
    for round_ in range(3):
        push_round(registry.client, truth, round_)
        start = threading.Barrier(2)
        outcomes: list[str] = []

        def one_poll(owner: str, start: threading.Barrier = start, outcomes: list[str] = outcomes) -> None:
            start.wait()
            try:
                polling.poll("r1", owner=owner)
                outcomes.append("ok")
            except polling.PartialPoll as exc:
                outcomes.append(str(exc))

        threads = [threading.Thread(target=one_poll, args=(f"poller-{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(outcomes) == 2, outcomes
        for outcome in outcomes:
            assert outcome == "ok" or "changed by another poll meanwhile" in outcome, outcome
    polling.poll("r1")  # whatever a loser left out, a later poll reports
    relay(watcher.redis)
    changes = stream_changes(watcher)
    assert len(changes) == len(set(changes)), "an event emitted twice"
    for repository, tag, change, digest in changes:
        if change == "removed":
            del replayed[repository][tag]
        else:
            replayed.setdefault(repository, {})[tag] = digest
    assert replayed == truth == snapshot_of(watcher)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_poll_whose_listing_is_older_than_the_snapshot_gives_up_and_invents_nothing(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poll A lists, the registry changes, poll B lists and commits, then A commits: A's repositories moved
    on since A read them, so A gives up on them, naming them, instead of reporting the tags moved back."""
    names = [f"{unique_repo}/r{i}" for i in range(4)]
    for name in names:
        registry.client.push_image(name, "v1")
    add(watcher, registry.url, unique_repo)
    polling.poll("r1")
    monkeypatch.setattr(leases, "claim", lambda *_args: True)
    save, listed, resume = saving.save, threading.Event(), threading.Event()

    def held_once(*args: Any) -> Any:
        if not listed.is_set():  # A's first commit waits until B has committed
            listed.set()
            resume.wait(60)
        return save(*args)

    monkeypatch.setattr(saving, "save", held_once)
    for name in names:
        registry.client.push_image(name, "v1", seed="what A lists")
    late: list[BaseException] = []
    poll_a = threading.Thread(target=lambda: _catch(late, lambda: polling.poll("r1", owner="a")))
    poll_a.start()
    assert listed.wait(60)
    truth = {name: {"v1": registry.client.push_image(name, "v1", seed="what B lists")} for name in names}
    assert {e.repository for e in polling.poll("r1", owner="b").events} == set(names)
    resume.set()
    poll_a.join(60)
    assert len(late) == 1 and isinstance(late[0], polling.PartialPoll), late
    assert "changed by another poll meanwhile" in str(late[0])
    assert late[0].result.events == []

    assert polling.poll("r1").events == []
    relay(watcher.redis)
    changes = stream_changes(watcher)
    assert sorted(changes) == [(name, "v1", "updated", truth[name]["v1"]) for name in names]
    assert snapshot_of(watcher) == truth


def _catch(caught: list[BaseException], work: Any) -> None:
    try:
        work()
    except BaseException as exc:
        caught.append(exc)
