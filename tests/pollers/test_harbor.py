"""`--provider oci` on a Harbor: listed through Harbor's API (push times, no HEAD per tag), driven by the CLI.

The Harbor is the fake in `tests/fakes/harbor.py`; its `/v2/` side is a real registry, so every image here
is really pushed, retagged and deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import Watcher
from tests.fakes.harbor import FakeHarbor, Seen
from tests.support.fixtures import RegistryEnv
from tests.support.registry import RegistryClient
from watcher.pollers import harbor as harbor_api

ROBOT = "robot$ci"
SECRET = "Hq7-robot-secret-xyz"


@pytest.fixture
def backing(registry_factory) -> RegistryEnv:
    """The real registry behind the fake Harbor: private to the test, so request counts are exact."""
    return registry_factory()


@pytest.fixture
def harbor(backing: RegistryEnv) -> Iterator[FakeHarbor]:
    with FakeHarbor(backing.url, accounts={ROBOT: SECRET}) as fake:
        yield fake


@pytest.fixture
def pusher(harbor: FakeHarbor) -> Iterator[RegistryClient]:
    """CI pushing to Harbor: through the fake's URL, so the fake learns the push times."""
    with RegistryClient(harbor.url) as client:
        yield client


def add(watcher: Watcher, tmp_path: Path, url: str, *extra: str, password: str = SECRET) -> Result:
    secret = tmp_path / "robot.secret"
    secret.write_text(password)
    return watcher.add_registry("h", url, "--username", ROBOT, "--password", f"@{secret}", *extra)


def poll(watcher: Watcher, name: str = "h") -> dict:
    result = watcher.cli("poll", name, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def changes(report: dict) -> list[tuple[str, str, str]]:
    return sorted((e["change"], e["repository"], e["tag"]) for e in report["events"])


def event(report: dict, repository: str, tag: str) -> dict:
    (found,) = [e for e in report["events"] if (e["repository"], e["tag"]) == (repository, tag)]
    return found


def registry_calls(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if s.path.startswith("/v2/")]


def one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert SECRET not in result.output
    return lines[0]


# ---- the whole story -----------------------------------------------------------------------------------
def test_push_retag_move_delete_with_push_times_and_no_manifest_requests(
    watcher: Watcher, tmp_path: Path, backing: RegistryEnv, harbor: FakeHarbor, pusher: RegistryClient
) -> None:
    pusher.push_image("proj/app", "v1")
    pusher.push_image("proj/app", "v2")
    pusher.push_image("proj/team/api", "v1")  # a name with '/': Harbor wants it URL-encoded twice
    assert add(watcher, tmp_path, harbor.url).exit_code == 0
    harbor.reset()

    first = poll(watcher)
    assert first["baseline"] is True and first["events"] == []
    assert first["tags"] == 3

    pusher.push_image("proj/app", "v3")
    pushed = poll(watcher)
    assert changes(pushed) == [("added", "proj/app", "v3")]
    v3 = event(pushed, "proj/app", "v3")
    assert v3["digest"] == backing.client.digest("proj/app", "v3")
    assert datetime.fromisoformat(v3["pushed_at"]) == harbor.tag_pushed_at("proj/app", "v3")

    old_v2 = backing.client.digest("proj/app", "v2")
    pusher.retag("proj/app", "v1", "stable")
    pusher.push_image("proj/app", "v2")  # v2 moves to a new image
    moved = poll(watcher)
    assert changes(moved) == [("added", "proj/app", "stable"), ("updated", "proj/app", "v2")]
    v2 = event(moved, "proj/app", "v2")
    assert v2["previous_digest"] == old_v2
    assert v2["digest"] == backing.client.digest("proj/app", "v2") != old_v2
    assert datetime.fromisoformat(v2["pushed_at"]) == harbor.tag_pushed_at("proj/app", "v2")
    stable = event(moved, "proj/app", "stable")
    assert stable["digest"] == backing.client.digest("proj/app", "v1")
    assert datetime.fromisoformat(stable["pushed_at"]) == harbor.tag_pushed_at("proj/app", "stable")

    api_v1_pushed = harbor.tag_pushed_at("proj/team/api", "v1")
    pusher.delete("proj/team/api", "v1")
    deleted = poll(watcher)
    assert changes(deleted) == [("removed", "proj/team/api", "v1")]
    assert datetime.fromisoformat(event(deleted, "proj/team/api", "v1")["pushed_at"]) == api_v1_pushed

    sent = harbor.sent_by_watcher()
    # polls list without /v2/: only the new images' metadata is read there, by digest
    assert registry_calls(sent) and all("/sha256:" in s.path and s.method == "GET" for s in registry_calls(sent))
    assert any("/repositories/team%252Fapi/artifacts" in s.path for s in sent)
    assert [e["change"] for e in watcher.stream_entries()] == ["added", "added", "updated", "removed"]


def test_harbor_costs_fewer_requests_than_a_head_per_tag(
    watcher: Watcher, tmp_path: Path, backing: RegistryEnv, harbor: FakeHarbor, pusher: RegistryClient
) -> None:
    for repo in ("proj/a", "proj/b"):
        for tag in ("v1", "v2", "v3", "v4"):
            pusher.push_image(repo, tag)
    assert add(watcher, tmp_path, harbor.url, "--emit-existing").exit_code == 0
    plain = watcher.add_registry("plain", backing.url, "--emit-existing")
    assert plain.exit_code == 0, plain.output
    harbor.reset()

    through_harbor, through_heads = poll(watcher, "h"), poll(watcher, "plain")
    assert changes(through_harbor) == changes(through_heads)
    assert [e["digest"] for e in through_harbor["events"]] == [e["digest"] for e in through_heads["events"]]
    assert all(e["pushed_at"] for e in through_harbor["events"])
    assert not any(e["pushed_at"] for e in through_heads["events"])
    # Harbor: systeminfo, users/current, projects, repositories of proj, artifacts of a and b; and each new
    # image's manifest and config (for its event), read once for the installation
    assert through_harbor["requests"] == 6 + 2 * 8
    # generic: the one Harbor question (404 here), catalog, 2 tag lists, 8 manifest HEADs (the images known)
    assert through_heads["requests"] == 12


def test_a_plain_registry_is_listed_the_generic_way(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> None:
    repo = f"{unique_repo}/app"
    registry.client.push_image(repo, "v1")
    result = watcher.add_registry("h", registry.url, "--repository", repo, "--emit-existing")
    assert result.exit_code == 0, result.output
    report = poll(watcher)
    assert changes(report) == [("added", repo, "v1")]
    assert report["events"][0]["digest"] == registry.client.digest(repo, "v1")
    assert report["events"][0]["pushed_at"] == ""  # the generic path learns no push time
    assert report["requests"] == 3 + 2  # detection (404), one tag list, one manifest HEAD; the image's metadata


# ---- credentials and permissions -----------------------------------------------------------------------
def test_refused_credentials_are_one_line_and_save_nothing(
    watcher: Watcher, tmp_path: Path, harbor: FakeHarbor, pusher: RegistryClient
) -> None:
    pusher.push_image("proj/app", "v1")
    one_line_error(add(watcher, tmp_path, harbor.url, password="wrong"), "registry 'h'", "credentials refused", "401")
    assert "wrong" not in watcher.cli("registry", "list").output
    assert watcher.cli("registry", "show", "h").exit_code != 0


def test_credentials_refused_mid_life_fail_the_poll_instead_of_removing_everything(
    watcher: Watcher, tmp_path: Path, harbor: FakeHarbor, pusher: RegistryClient
) -> None:
    """Harbor serves refused credentials as anonymous (public projects only): that must not read as deletions."""
    pusher.push_image("proj/app", "v1")
    pusher.push_image("open/app", "v1")
    harbor.public.add("open")
    assert add(watcher, tmp_path, harbor.url).exit_code == 0
    assert poll(watcher)["tags"] == 2
    before = json.loads(watcher.cli("registry", "show", "h", "--json").stdout)["tags"]

    harbor.accounts[ROBOT].password = "rotated"  # the robot's secret was refreshed in Harbor, not here
    one_line_error(watcher.cli("poll", "h"), "registry 'h'", "credentials refused")
    assert json.loads(watcher.cli("registry", "show", "h", "--json").stdout)["tags"] == before
    assert watcher.stream_entries() == []


def test_missing_permissions(watcher: Watcher, tmp_path: Path, harbor: FakeHarbor, pusher: RegistryClient) -> None:
    pusher.push_image("proj/app", "v1")
    harbor.grant(ROBOT, "proj", "artifact:list")  # may see the project, may not list its repositories
    one_line_error(add(watcher, tmp_path, harbor.url), "registry 'h'", "permission missing", "proj", "403")

    # allowed to pull but not to list artifacts: named repositories still work, through the registry API
    harbor.accounts[ROBOT].grants = {"proj": {"repository:list"}}
    assert add(watcher, tmp_path, harbor.url, "--repository", "proj/app", "--emit-existing").exit_code == 0
    report = poll(watcher)
    assert changes(report) == [("added", "proj/app", "v1")]
    assert report["events"][0]["pushed_at"] == ""


# ---- paging ----------------------------------------------------------------------------------------------
def test_projects_repositories_and_artifacts_are_paged(
    watcher: Watcher,
    tmp_path: Path,
    backing: RegistryEnv,
    harbor: FakeHarbor,
    pusher: RegistryClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(harbor_api, "PAGE_SIZE", 2)
    expected = []
    for repo, tags in {"p1/a": 5, "p2/b": 1, "p2/c": 1, "p2/d": 1, "p3/e": 2}.items():
        for n in range(tags):
            pusher.push_image(repo, f"t{n}")
            expected.append(("added", repo, f"t{n}"))
    assert add(watcher, tmp_path, harbor.url, "--emit-existing").exit_code == 0
    harbor.reset()

    report = poll(watcher)
    assert changes(report) == sorted(expected)
    for e in report["events"]:
        assert e["digest"] == backing.client.digest(e["repository"], e["tag"])
    paths = [s.path for s in harbor.sent_by_watcher()]
    assert any(p.startswith("/api/v2.0/projects?") and "page=2&page_size=2" in p for p in paths)
    assert any("/projects/p2/repositories?" in p and "page=2&page_size=2" in p for p in paths)
    assert any("/repositories/a/artifacts?" in p and "page=3&page_size=2" in p for p in paths)
    assert not any("page=4" in p for p in paths)


def test_a_list_that_changes_while_paged_is_read_again(
    watcher: Watcher,
    tmp_path: Path,
    backing: RegistryEnv,
    harbor: FakeHarbor,
    pusher: RegistryClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(harbor_api, "PAGE_SIZE", 1)
    pusher.push_image("proj/app", "v1")
    pusher.push_image("proj/app", "v2")
    assert add(watcher, tmp_path, harbor.url).exit_code == 0
    assert poll(watcher)["baseline"] is True

    pushes: list[str] = []

    def push_between_pages(path: str) -> None:
        if "/artifacts?" in path and "page=2&" in path and len(pushes) < limit:
            pushes.append(path)
            backing.client.push_image("proj/app", f"new{len(pushes)}")  # behind the listing's back

    harbor.before_api = push_between_pages
    limit = 1  # once: the second read is steady, and sees the new tag
    assert changes(poll(watcher)) == [("added", "proj/app", "new1")]

    limit = 100  # every read changes under the listing: the poll fails and changes nothing
    before = json.loads(watcher.cli("registry", "show", "h", "--json").stdout)["tags"]
    one_line_error(watcher.cli("poll", "h"), "registry 'h'", "bad response", "changing while it was paged")
    assert json.loads(watcher.cli("registry", "show", "h", "--json").stdout)["tags"] == before
    assert len(watcher.stream_entries()) == 1
