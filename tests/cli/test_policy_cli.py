"""`watcher policy add|list|show|rm` end to end against the real registry: what a policy selects, its
`selected` events on the stream, the JSON shapes, and every bad input as one line saying what to do."""

from __future__ import annotations

import json

import pytest
from click.testing import Result

from tests.cli.test_cli_failures import one_line
from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.registry import free_port
from watcher.db import get_engine
from watcher.settings import get_settings


def selections(watcher: Watcher) -> list[tuple[str, str, str]]:
    return [(e["policy"], e["tag"], e["previous_tag"]) for e in watcher.stream_entries() if e["change"] == "selected"]


def ok(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_add_list_show_and_rm_a_policy_of_a_polled_repository(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = registry.client.push_image(unique_repo, "1.2.3")
    registry.client.push_image(unique_repo, "1.3.0-rc.1")
    registry.client.push_image(unique_repo, "latest")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    ok(watcher.cli("poll", "r1"))

    added = ok(watcher.cli("policy", "add", "app", "--registry", "r1", "--repository", unique_repo, "--semver", "^1.2"))
    assert added == [f"added policy 'app' (semver ^1.2) on r1 {unique_repo}: selects 1.2.3 ({first})"]
    assert selections(watcher) == [("app", "1.2.3", "")]  # published by `policy add` itself

    newer = registry.client.push_image(unique_repo, "1.2.4")
    ok(watcher.cli("poll", "r1"))
    assert selections(watcher)[1:] == [("app", "1.2.4", "1.2.3")]

    # Redis down: the policy is saved, its event waits in the database, and the next relay sends it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WATCHER_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
        get_settings.cache_clear()
        get_engine.cache_clear()
        down = watcher.cli("policy", "add", "edge", "--registry", "r1", "--repository", unique_repo, "--semver", "^1.2")
        one_line(
            down, "policy 'edge' is saved, but its selected event is not on the stream yet", "wait in the database"
        )
        assert "added policy 'edge'" in down.stdout
    get_settings.cache_clear()
    get_engine.cache_clear()
    ok(watcher.cli("policy", "add", "pre", "--registry", "r1", "--repository", unique_repo, "--semver", "^1.2",
                   "--prerelease", "--filter", "^(?P<v>1[.].*)$", "--extract", "$v"))  # fmt: skip
    assert selections(watcher)[2:] == [("edge", "1.2.4", ""), ("pre", "1.3.0-rc.1", "")]

    table = ok(watcher.cli("policy", "list"))
    assert table[0].split() == ["NAME", "REGISTRY", "REPOSITORY", "STRATEGY", "SELECTED", "SINCE"]
    assert [line.split()[:5] for line in table[1:]] == [
        ["app", "r1", unique_repo, "semver", "^1.2"],
        ["edge", "r1", unique_repo, "semver", "^1.2"],
        ["pre", "r1", unique_repo, "semver", "^1.2"],
    ]
    assert "(pre-releases) filter '^(?P<v>1[.].*)$' extract '$v'  1.3.0-rc.1  just now" in table[3]
    listed = json.loads(watcher.cli("policy", "list", "--registry", "r1", "--json").stdout)
    assert [p["name"] for p in listed] == ["app", "edge", "pre"]
    assert listed[2]["policy"] == {"semver": "^1.2", "filter": "^(?P<v>1[.].*)$", "extract": "$v", "prerelease": True}
    assert ok(watcher.cli("policy", "list", "--registry", "other")) == [
        "no policies on registry 'other': add one with `watcher policy add`"
    ]

    reference = f"{registry.host}/{unique_repo}:1.2.4@{newer}"
    shown = ok(watcher.cli("policy", "show", "app"))
    assert shown[:7] == [
        "policy: app",
        "registry: r1",
        f"repository: {unique_repo}",
        "strategy: semver ^1.2",
        "selected: 1.2.4",
        f"digest: {newer}",
        f"pull: {reference}",
    ]
    assert shown[8] == "tags: 3 considered, 1 ignored"  # the versions took part; `latest` is none
    assert [line.split()[1:] for line in shown[-2:]] == [["1.2.4", newer, "(was", "1.2.3)"], ["1.2.3", first]]
    detail = json.loads(watcher.cli("policy", "show", "app", "--json").stdout)
    assert detail["selected"]["reference"] == reference and detail["selected"]["since"].endswith("Z")
    assert (detail["considered"], detail["ignored"], detail["policy"]) == (3, 1, {"semver": "^1.2"})
    assert [(h["tag"], h["digest"], h["previous_tag"], h["previous_digest"]) for h in detail["history"]] == [
        ("1.2.4", newer, "1.2.3", first),
        ("1.2.3", first, "", ""),
    ]
    assert set(detail["history"][0]) == {"event_id", "detected_at", "tag", "digest", "previous_tag", "previous_digest"}

    assert ok(watcher.cli("policy", "rm", "app")) == ["removed policy 'app'"]
    one_line(watcher.cli("policy", "show", "app"), "no policy named 'app': see `watcher policy list`")
    one_line(watcher.cli("policy", "rm", "app"), "no policy named 'app'")
    assert [p["name"] for p in json.loads(watcher.cli("policy", "list", "--json").stdout)] == ["edge", "pre"]


def test_bad_input_is_one_line_that_says_what_to_do_and_saves_nothing(watcher: Watcher, registry: RegistryEnv) -> None:
    assert watcher.add_registry("r1", registry.url, "--no-verify").exit_code == 0
    assert watcher.cli("workspace", "create", "team").exit_code == 0
    ok(watcher.cli("policy", "add", "app", "--registry", "r1", "--repository", "team/app", "--digest", "latest"))
    add = ["policy", "add", "new", "--registry", "r1", "--repository", "team/app"]
    cases = [
        ([*add, "--semver", "^1", "--numeric", "asc"], ["a policy takes one strategy, not --semver and --numeric"]),
        (add, ["a policy needs one strategy: --semver RANGE", "--newest-build or --digest TAG"]),
        ([*add, "--semver", ">=1 <<2"], ["--semver '>=1 <<2' is not a valid range", "npm syntax: ^1.2"]),
        ([*add, "--numeric", "up"], ["--numeric takes asc or desc, not 'up'"]),
        ([*add, "--newest-build", "--extract", "$v"], ["--newest-build sorts by no key: --extract has no use"]),
        ([*add, "--alphabetical", "asc", "--filter", "(?<=a)"], ["--filter '(?<=a)' is not a valid RE2"]),
        ([*add, "--alphabetical", "asc", "--filter", "(?P<v>.*)", "--extract", "$w"], ["names group 'w'"]),
        ([*add, "--digest", "latest", "--prerelease"], ["--prerelease applies to --semver only"]),
        (["policy", "add", "Bad", "--registry", "r1", "--repository", "a", "--digest", "x"], ["policy name 'Bad'"]),
        ([*add[:4], "nope", *add[5:], "--digest", "x"], ["no registry named 'nope': see `watcher registry list`"]),
        ([*add[:6], "Team/App", "--digest", "x"], ["--repository 'Team/App'"]),
        (
            ["policy", "add", "app", "--registry", "r1", "--repository", "team/app", "--digest", "v2"],
            ["policy 'app' exists: remove it first (`watcher policy rm app`), or edit it with `watcher registry"],
        ),
        ([*add, "--digest", "x", "--workspace", "team"], ["no registry named 'r1'"]),  # the other workspace's
        ([*add, "--digest", "x", "--workspace", "gone"], ["no workspace named 'gone'"]),
        (["policy", "list", "--workspace", "gone"], ["no workspace named 'gone'"]),
        (["policy", "show", "new"], ["no policy named 'new': see `watcher policy list`"]),
        (["policy", "show", "app", "--workspace", "team"], ["no policy named 'app'"]),
        (["policy", "rm", "app", "--workspace", "team"], ["no policy named 'app'"]),
    ]
    for args, needles in cases:
        one_line(watcher.cli(*args), *needles)
    assert [p["name"] for p in json.loads(watcher.cli("policy", "list", "--json").stdout)] == ["app"]
    assert json.loads(watcher.cli("policy", "list", "--workspace", "team", "--json").stdout) == []
    assert watcher.stream_entries() == []  # nothing selected (no poll yet): nothing published
