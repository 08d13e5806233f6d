# ruff: noqa: F811 - fixtures imported by name are parameters of the tests
"""Selection events through every door a worker has: a real registry's notification to the real receiver,
polled by a real worker; a big registry fanned out over two real workers; and two workspaces watching the
same registry. Each stream is replayed from nothing (`replay`): every `selected` entry must be what the
policy selects among its repository's tags as the stream told them at that point — so after the tag events
that caused it, never a duplicate, never one invented — and the replay ends at the registry's truth."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.conftest import Watcher
from tests.polling.test_fanout import chunk_lines, chunks_of_four, finished  # noqa: F401 - a fixture
from tests.support.api_server import ApiServer
from tests.support.cdevents import validate_cloudevent
from tests.support.faults import FaultProxy
from tests.support.fixtures import RegistryEnv
from tests.support.hooks import hook_server  # noqa: F401 - a fixture
from tests.support.polls import runs_of, set_row, wait_for
from tests.support.registry import RegistryClient, RegistryServer
from tests.web.test_webhooks import enable, notify_with
from watcher import schema
from watcher.db import session_scope
from watcher.errors import NotFoundError
from watcher.models import utcnow
from watcher.outbox.relay import relay
from watcher.policies import Candidate, Policy
from watcher.policies import select as select_tag
from watcher.policies.store import PolicySpec, remove, save
from watcher.polling import poll as polling
from watcher.polling.queue import queue_poll
from watcher.read.policies import policy as policy_view
from watcher.registrations import store
from watcher.registrations.spec import RegistrySpec
from watcher.settings import get_settings

Truth = dict[str, dict[str, str]]
TEAM = "team"


@dataclass(frozen=True)
class Watched:
    """A policy as a test saves it, and selects with it itself."""

    name: str
    repository: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def choose(self, tags: Mapping[str, str]) -> tuple[str, str]:
        """(tag, digest) the policy selects among `tags` (tag -> digest); ("", "") for nothing."""
        chosen = select_tag(Policy.from_options(**self.options), [Candidate(t, d) for t, d in tags.items()])
        return (chosen.tag, chosen.digest) if chosen else ("", "")


def add_policies(watcher: Watcher, registry: str, policies: Iterable[Watched], workspace_id: int = 1) -> int:
    """Saved, each in its own transaction as `watcher policy add` does; how many events they wrote."""
    written = 0
    for one in policies:
        with session_scope(watcher.engine) as session:
            spec = PolicySpec.build(one.name, registry, one.repository, **one.options)
            written += len(save(session, spec, workspace_id=workspace_id).events)
    return written


def replay(entries: list[dict[str, str]], policies: Iterable[Watched]) -> tuple[Truth, dict[str, tuple[str, str]]]:
    """The registry and each policy's selection as the stream tells them from nothing, every entry checked
    on the way: a tag event changes what the replay holds (an `added` tag was not there, a `removed` one was,
    an `updated` one moved); a `selected` entry is what its policy selects among the tags replayed so far,
    follows its previous selection (`previous_tag`, `previous_digest`) and differs from it."""
    watched = {one.name: one for one in policies}
    assert len({e["event_id"] for e in entries}) == len(entries), "an event appended twice"
    state: Truth = {}
    selected: dict[str, tuple[str, str]] = {}
    for n, entry in enumerate(entries):
        repository, tag, change, digest = entry["repository"], entry["tag"], entry["change"], entry["digest"]
        tags = state.setdefault(repository, {})
        where = f"entry {n} ({change} {repository}:{tag} {entry.get('policy', '')})"
        if change == "selected":
            policy = watched[entry["policy"]]
            assert repository == policy.repository, where
            before = selected.get(policy.name, ("", ""))
            assert (entry["previous_tag"], entry["previous_digest"]) == before, where
            assert (tag, digest) == policy.choose(tags) != before, f"{where}: not what {tags} selects"
            selected[policy.name] = (tag, digest)
        elif change == "added":
            assert tag not in tags, f"{where}: added twice"
            tags[tag] = digest
        elif change == "updated":
            assert tags.get(tag, digest) != digest, f"{where}: not moved"
            tags[tag] = digest
        else:
            assert tags.pop(tag) == digest, where
    return {repository: tags for repository, tags in state.items() if tags}, selected


def expected(truth: Truth, policies: Iterable[Watched]) -> dict[str, tuple[str, str]]:
    """What each policy selects on the registry as it is (a policy that never selected has no entry)."""
    chosen = {one.name: one.choose(truth.get(one.repository, {})) for one in policies}
    return {name: pick for name, pick in chosen.items() if pick != ("", "")}


def changes(watcher: Watcher) -> list[tuple[str, str, str, str]]:
    return [(e["change"], e["tag"], e.get("policy", ""), e.get("previous_tag", "")) for e in watcher.stream_entries()]


# ---- a webhook, polled by a real worker ---------------------------------------------------------------
def test_a_notified_push_is_selected_by_the_worker_after_its_added_event(
    watcher: Watcher,
    hook_server: ApiServer,
    worker_queue: str,
    unique_repo: str,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """The real registry notifies the real receiver, whose hint a real worker lists and commits: `1.2.4`
    under `^1.2` is one `selected` after its `added`; `2.0.0` none; deleting `1.2.4` selects `1.2.3` again."""
    app = f"{unique_repo}/app"
    policies = [Watched("app", app, {"semver": "^1.2"})]
    with RegistryServer(root=tmp_path / "notifying") as server, RegistryClient(server.url) as client:
        client.push_image(app, "1.2.3")
        added = watcher.add_registry(
            "r1", server.url, "--repository", f"{unique_repo}/*", "--emit-existing", "--interval", "1h"
        )
        assert added.exit_code == 0, added.output
        start_worker("w1", concurrency=1)  # its beat polls the registry first; the next poll is an hour away
        assert wait_for(lambda: [r.outcome for r in runs_of(watcher, "r1")] == ["ok"], 60), "no first poll"
        assert add_policies(watcher, "r1", policies) == 1  # selects 1.2.3 at once
        enable(watcher)
        notify_with(server, watcher)

        def seen(*expected: tuple[str, str, str, str]) -> bool:
            return changes(watcher)[-len(expected) :] == list(expected)

        newer = client.push_image(app, "1.2.4")
        assert wait_for(lambda: seen(("added", "1.2.4", "", ""), ("selected", "1.2.4", "app", "1.2.3")), 30), (
            changes(watcher),
            server.log_tail(),
        )
        client.push_image(app, "2.0.0")
        assert wait_for(lambda: seen(("added", "2.0.0", "", "")), 30), changes(watcher)
        client.delete(app, "1.2.4")
        assert wait_for(lambda: seen(("removed", "1.2.4", "", ""), ("selected", "1.2.3", "app", "1.2.4")), 30), changes(
            watcher
        )
        truth = {app: {tag: client.digest(app, tag) for tag in ("1.2.3", "2.0.0")}}
    entries = watcher.stream_entries()
    assert replay(entries, policies) == (truth, expected(truth, policies))
    assert [c for c in changes(watcher) if c[0] == "selected"] == [
        ("selected", "1.2.3", "app", ""),
        ("selected", "1.2.4", "app", "1.2.3"),
        ("selected", "1.2.3", "app", "1.2.4"),
    ]
    assert entries[-1]["previous_digest"] == newer
    for entry in entries:
        validate_cloudevent(json.loads(entry["cloudevent"]))
    runs = runs_of(watcher, "r1")[1:]
    assert {run.trigger for run in runs} == {"webhook"}, [(r.trigger, r.events) for r in runs]
    assert sum(run.events for run in runs) == 5  # the notifications' polls found every change
    assert "Traceback" not in (tmp_path / "w1.log").read_text()


# ---- fan-out over two real workers -------------------------------------------------------------------
@pytest.mark.usefixtures("chunks_of_four")
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_fanned_out_poll_selects_each_policy_once_after_its_repositorys_tag_events(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, start_worker, worker_queue: str, tmp_path: Path
) -> None:
    """12 repositories listed 4 to a chunk by two workers; 6 policies on 5 of them. The baseline selects
    each policy's first tag; then every repository changes, in ways that move some selections and not
    others. Each `selected` entry appears once, after the tag events of its repository's commit."""
    names = [f"{unique_repo}/r{i:02d}" for i in range(12)]
    truth: Truth = {name: {"1.0.0": registry.client.push_image(name, "1.0.0")} for name in names}
    policies = [
        Watched("semver-0", names[0], {"semver": "^1"}),
        Watched("patch-0", names[0], {"semver": "~1.0"}),
        Watched("semver-5", names[5], {"semver": "^1"}),
        Watched("alpha-7", names[7], {"alphabetical": "asc"}),  # the last in ascending order
        Watched("digest-9", names[9], {"digest": "1.0.0"}),
        Watched("major-10", names[10], {"semver": ">=2"}),  # selects nothing until 2.0.0 is pushed
    ]
    proxy = FaultProxy(registry.url)  # each tag list takes 0.3 s: a chunk is long enough to share
    proxy.add(r"/tags/list", "delay", seconds=0.3)
    try:
        args = ("--repository", f"{unique_repo}/*", "--emit-existing", "--interval", "1h")
        assert watcher.add_registry("r1", proxy.url, *args).exit_code == 0
        assert add_policies(watcher, "r1", policies) == 0  # nothing stored yet: nothing selected
        set_row(watcher, "r1", next_poll_at=utcnow() + timedelta(hours=1))  # polled when the test says only
        queue_poll("r1")  # "Poll now": the first worker up takes it
        start_worker("w1", concurrency=1)
        start_worker("w2", concurrency=1)
        assert wait_for(lambda: any(r.outcome == "ok" for r in finished(watcher)), 50), runs_of(watcher, "r1")
        for i, name in enumerate(names):
            tag = ["1.1.0", "1.0.0", "2.0.0", "zz"][i % 4]  # 1.0.0 pushed again: another digest
            truth[name][tag] = registry.client.push_image(name, tag)
        since = utcnow()
        queue_poll("r1")
        assert wait_for(lambda: any(r.started_at >= since and r.outcome == "ok" for r in finished(watcher)), 30)
    finally:
        proxy.close()
    assert wait_for(lambda: replay(watcher.stream_entries(), policies)[0] == truth, 10), "not replayed"
    assert replay(watcher.stream_entries(), policies) == (truth, expected(truth, policies))
    selections = [(e["policy"], e["tag"]) for e in watcher.stream_entries() if e["change"] == "selected"]
    first = [("semver-0", "1.0.0"), ("patch-0", "1.0.0"), ("semver-5", "1.0.0"), ("alpha-7", "1.0.0")]
    then = [("semver-0", "1.1.0"), ("semver-5", "1.0.0"), ("alpha-7", "zz"), ("digest-9", "1.0.0")]
    assert sorted(selections) == sorted([*first, ("digest-9", "1.0.0"), *then, ("major-10", "2.0.0")])
    # semver-5 and digest-9: the same tag on another digest; patch-0 keeps its 1.0.0
    assert {r.outcome for r in finished(watcher)} == {"ok"}
    assert any(chunk_lines(tmp_path / f"{worker}.log") for worker in ("w1", "w2")), "no chunk was listed"


# ---- workspaces --------------------------------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_policy_sees_and_moves_only_its_own_workspaces_registry(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same registry URL is `prod` in `default` and in `team`; each workspace has a policy `app` on it,
    with another strategy. A poll of either registry evaluates its own workspace's policy only (the other's
    row is not even read), and each `selected` event goes to its workspace's stream only; `team` cannot
    name `default`'s registries; removing `team`'s policy leaves `default`'s."""
    monkeypatch.setenv("WATCHER_STREAM_PER_WORKSPACE", "true")
    get_settings.cache_clear()
    app = f"{unique_repo}/app"
    truth = {app: {"1.2.3": registry.client.push_image(app, "1.2.3")}}
    with session_scope(watcher.engine) as session:
        team_id = session.execute(
            insert(schema.workspaces).values(name=TEAM).returning(schema.workspaces.c.id)
        ).scalar_one()
        options = {"repositories": [f"{unique_repo}/*"]}
        for workspace in (schema.DEFAULT_WORKSPACE, TEAM):
            spec = RegistrySpec("prod", "oci", registry.url, options=options, emit_existing=True, workspace=workspace)
            store.save(session, spec)
        store.save(session, RegistrySpec("only-default", "oci", registry.url, options=options))
    ours, theirs = Watched("app", app, {"semver": "^1.2"}), Watched("app", app, {"alphabetical": "desc"})
    polling.poll("prod")
    polling.poll(f"{TEAM}/prod")
    assert add_policies(watcher, "prod", [ours]) == 1
    assert add_policies(watcher, "prod", [theirs], workspace_id=team_id) == 1
    with pytest.raises(NotFoundError, match="no registry named 'only-default'"):
        add_policies(watcher, "only-default", [Watched("other", app, {"semver": "*"})], workspace_id=team_id)

    def row(workspace_id: int) -> tuple[str | None, Any]:
        with session_scope(watcher.engine) as session:
            found = session.execute(
                select(schema.policies.c.selected_tag, schema.policies.c.evaluated_at).where(
                    schema.policies.c.workspace_id == workspace_id
                )
            ).one()
        return found.selected_tag, found.evaluated_at

    def stream(workspace: str) -> list[dict[str, str]]:
        entries: Any = watcher.redis.xrange(f"{watcher.stream}:{workspace}")
        return [fields for _, fields in entries]

    ours_before = row(schema.DEFAULT_WORKSPACE_ID)
    for tag in ("1.2.4", "1.0.0"):  # 1.0.0, first alphabetically: `team`'s moves
        truth[app][tag] = registry.client.push_image(app, tag)
    polling.poll(f"{TEAM}/prod")
    relay(watcher.redis)
    assert row(schema.DEFAULT_WORKSPACE_ID) == ours_before  # not even evaluated
    assert row(team_id)[0] == "1.0.0"
    assert [(e["change"], e["tag"]) for e in stream(schema.DEFAULT_WORKSPACE)] == [
        ("added", "1.2.3"),
        ("selected", "1.2.3"),
    ]
    assert [(e["change"], e["tag"]) for e in stream(TEAM)][2:] == [
        ("added", "1.0.0"),
        ("added", "1.2.4"),
        ("selected", "1.0.0"),
    ]
    polling.poll("prod")
    relay(watcher.redis)
    assert (row(team_id)[0], row(schema.DEFAULT_WORKSPACE_ID)[0]) == ("1.0.0", "1.2.4")
    for workspace, policy in ((schema.DEFAULT_WORKSPACE, ours), (TEAM, theirs)):
        entries = stream(workspace)
        assert replay(entries, [policy]) == (truth, expected(truth, [policy]))
        assert {(e["workspace"], e["registry"]) for e in entries} == {(workspace, "prod")}
        selected = [json.loads(e["cloudevent"]) for e in entries if e["change"] == "selected"]
        assert len(selected) == 2
        assert {c["data"]["subject"]["id"] for c in selected} == {f"/watcher/workspaces/{workspace}/policies/app"}
        assert {c["source"] for c in selected} == {f"/watcher/workspaces/{workspace}/registries/prod"}
    assert watcher.stream_entries() == []  # nothing on the deployment's one stream

    with session_scope(watcher.engine) as session:
        remove(session, "app", workspace_id=team_id)
    with session_scope(watcher.engine) as session:
        view = policy_view(session, "app", workspace_id=schema.DEFAULT_WORKSPACE_ID)
        with pytest.raises(NotFoundError):
            policy_view(session, "app", workspace_id=team_id)
    assert (view.tag, view.digest, view.considered) == ("1.2.4", truth[app]["1.2.4"], 3)


# ---- a repository emptied ------------------------------------------------------------------------------
def test_a_repository_emptied_selects_nothing_and_says_so_once(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str
) -> None:
    """Its last tag deleted, the repository leaves the snapshot: its policy's `selected` event names no tag
    (the previous one only), valid against both schemas; a push selects again."""
    app = f"{unique_repo}/app"
    policies = [Watched("app", app, {"semver": "*"})]
    first = registry.client.push_image(app, "1.0.0")
    added = watcher.add_registry("r1", registry.url, "--repository", f"{unique_repo}/*", "--emit-existing")
    assert added.exit_code == 0, added.output
    assert add_policies(watcher, "r1", policies) == 0
    for step in (
        lambda: None,
        lambda: registry.client.delete(app, "1.0.0"),
        lambda: registry.client.push_image(app, "1.0.1"),
    ):
        step()
        polled = watcher.cli("poll", "r1")
        assert polled.exit_code == 0, polled.output
    entries = watcher.stream_entries()
    assert changes(watcher) == [
        ("added", "1.0.0", "", ""),
        ("selected", "1.0.0", "app", ""),
        ("removed", "1.0.0", "", ""),
        ("selected", "", "app", "1.0.0"),
        ("added", "1.0.1", "", ""),
        ("selected", "1.0.1", "app", ""),
    ]
    assert (entries[3]["digest"], entries[3]["previous_digest"]) == ("", first)
    for entry in entries:
        validate_cloudevent(json.loads(entry["cloudevent"]))
    nothing = json.loads(entries[3]["cloudevent"])["data"]["subject"]["content"]
    assert "pullReference" not in nothing and nothing["previousTag"] == "1.0.0"
    truth = {app: {"1.0.1": entries[4]["digest"]}}
    assert replay(entries, policies) == (truth, expected(truth, policies))
