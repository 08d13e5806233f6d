"""The whole pipeline on a real OCI registry, driven through the CLI as a user would."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.support.cdevents import validate_cloudevent
from tests.support.fixtures import RegistryEnv
from watcher.models import Event, Tag


def add(watcher: Watcher, env: RegistryEnv, scope: str, *extra: str) -> None:
    creds = ["--username", env.username, "--password", env.password] if env.username and env.password else []
    result = watcher.add_registry("r1", env.url, "--repository", f"{scope}/*", *creds, *extra)
    assert result.exit_code == 0, result.output


def poll(watcher: Watcher) -> dict:
    result = watcher.cli("poll", "r1", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def changes(report: dict) -> list[tuple[str, str, str]]:
    return [(e["change"], e["repository"].rsplit("/", 1)[-1], e["tag"]) for e in report["events"]]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("mode", ["anonymous", "basic", "token"])
def test_baseline_then_push_retag_move_delete(watcher: Watcher, registry_factory, unique_repo: str, mode: str) -> None:
    env: RegistryEnv = registry_factory(mode) if mode != "anonymous" else registry_factory()
    app, api = f"{unique_repo}/app", f"{unique_repo}/api"
    v1 = env.client.push_image(app, "v1")
    env.client.retag(app, "v1", "latest")
    env.client.push_image(api, "1.0")
    add(watcher, env, unique_repo)

    baseline = poll(watcher)
    assert baseline["baseline"] is True and baseline["events"] == []
    assert (baseline["repositories"], baseline["tags"]) == (2, 3)
    assert watcher.stream_entries() == []

    v2 = env.client.push_image(app, "v2")
    env.client.retag(app, "v2", "latest")  # latest moves from v1's digest to v2's
    env.client.delete(api, "1.0")  # the repository's only tag: the repository is gone
    env.client.push_image(f"{unique_repo}/new", "0.1")  # a new repository: its tags are added
    report = poll(watcher)
    # each repository commits on its own: across repositories the order is the order they committed in
    assert sorted(changes(report)) == [
        ("added", "app", "v2"),
        ("added", "new", "0.1"),
        ("removed", "api", "1.0"),
        ("updated", "app", "latest"),
    ]
    moved = next(e for e in report["events"] if e["change"] == "updated")
    assert (moved["digest"], moved["previous_digest"]) == (v2, v1)

    entries = watcher.stream_entries()
    assert [(e["change"], e["tag"]) for e in entries] == [(e["change"], e["tag"]) for e in report["events"]]
    for entry in entries:
        validate_cloudevent(json.loads(entry["cloudevent"]))
        assert entry["registry"] == "r1" and entry["pushed_at"] == ""
    assert len({e["event_id"] for e in entries}) == 4

    again = poll(watcher)
    assert again["events"] == [] and len(watcher.stream_entries()) == 4

    history = watcher.cli("events", "--json", "--registry", "r1")
    assert [json.loads(line)["event_id"] for line in history.stdout.splitlines()] == [e["event_id"] for e in entries]


def test_emit_existing_reports_the_first_listing(watcher: Watcher, registry, unique_repo: str) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    registry.client.push_image(f"{unique_repo}/app", "v2")
    add(watcher, registry, unique_repo, "--emit-existing")
    assert changes(poll(watcher)) == [("added", "app", "v1"), ("added", "app", "v2")]


def test_tag_filters_and_literal_repositories(watcher: Watcher, registry, unique_repo: str) -> None:
    repo = f"{unique_repo}/app"
    for tag in ("v1.0.0", "v1.1.0-rc1", "latest", "sha-abc"):
        registry.client.push_image(repo, tag)
    result = watcher.add_registry(
        "r1", registry.url, "--repository", repo, "--include-tags", r"^v\d", "--exclude-tags", "-rc", "--emit-existing"
    )
    assert result.exit_code == 0, result.output
    report = poll(watcher)
    assert changes(report) == [("added", "app", "v1.0.0")]
    # literal repository, no catalog: Harbor detection, one tag list, one HEAD; the new image (an event
    # with --emit-existing): its manifest and config
    assert report["requests"] == 5


def test_an_unchanged_poll_writes_no_snapshot_rows(watcher: Watcher, registry, unique_repo: str) -> None:
    registry.client.push_image(f"{unique_repo}/app", "v1")
    add(watcher, registry, unique_repo)
    poll(watcher)
    with watcher.engine.connect() as conn:
        before = conn.execute(select(func.max(Tag.id), func.count(Tag.id))).one()
    assert poll(watcher)["events"] == []
    with watcher.engine.connect() as conn:
        assert conn.execute(select(func.max(Tag.id), func.count(Tag.id))).one() == before
        assert conn.scalar(select(func.count(Event.id))) == 0


def test_manifest_lists_and_docker_manifests_are_watched(watcher: Watcher, registry, unique_repo: str) -> None:
    repo = f"{unique_repo}/multi"
    amd = registry.client.push_image(repo, "amd64", media_type="docker")
    arm = registry.client.push_image(repo, "arm64")
    add(watcher, registry, unique_repo)
    poll(watcher)
    index = registry.client.push_index(repo, "latest", [amd, arm])
    report = poll(watcher)
    assert changes(report) == [("added", "multi", "latest")]
    assert report["events"][0]["digest"] == index
