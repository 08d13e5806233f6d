"""`registry apply` files with `policies:`: created, replaced or left as they were, each with its `selected`
event when its selection changes; a bad entry anywhere saves nothing at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_cli_failures import one_line
from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv


def write(tmp_path: Path, document: dict[str, Any]) -> str:
    path = tmp_path / "watcher.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def applied(watcher: Watcher, path: str) -> list[str]:
    result = watcher.cli("registry", "apply", "-f", path)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def selections(watcher: Watcher) -> list[tuple[str, str, str]]:
    return [(e["policy"], e["tag"], e["previous_tag"]) for e in watcher.stream_entries() if e["change"] == "selected"]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_policies_are_created_replaced_or_left_as_they_were(
    watcher: Watcher, registry: RegistryEnv, unique_repo: str, tmp_path: Path
) -> None:
    registry.client.push_image(unique_repo, "1.2.3")
    registry.client.push_image(unique_repo, "2.0.0")
    assert watcher.add_registry("old", registry.url, "--repository", unique_repo).exit_code == 0
    assert watcher.cli("poll", "old").exit_code == 0
    keep = ["policy", "add", "keep", "--registry", "old", "--repository", unique_repo, "--digest", "2.0.0"]
    assert watcher.cli(*keep).exit_code == 0
    document: dict[str, Any] = {
        "registries": [{"name": "r1", "provider": "oci", "url": registry.url, "repositories": [unique_repo]}],
        "policies": [
            {"name": "app", "registry": "r1", "repository": unique_repo, "semver": "^1.2"},  # in the file
            {"name": "on-old", "registry": "old", "repository": unique_repo, "alphabetical": "asc"},  # registered
        ],
    }
    path = write(tmp_path, document)
    assert applied(watcher, path) == [
        "created registry 'r1'",
        "created policy 'app'",  # r1 has no snapshot yet: nothing to select
        "created policy 'on-old': selects 2.0.0",
    ]
    assert selections(watcher) == [("keep", "2.0.0", ""), ("on-old", "2.0.0", "")]
    assert watcher.cli("poll", "r1").exit_code == 0  # its baseline: the policy's first selection
    assert selections(watcher)[2:] == [("app", "1.2.3", "")]

    assert applied(watcher, path) == [
        "unchanged registry 'r1'",
        "unchanged policy 'app'",
        "unchanged policy 'on-old'",
    ]
    before = len(watcher.stream_entries())

    document["policies"][0] = {"name": "app", "registry": "r1", "repository": unique_repo, "semver": ">=2"}
    document["policies"][1]["filter"] = "^2"  # another definition, the same selection: no event
    assert applied(watcher, write(tmp_path, document)) == [
        "unchanged registry 'r1'",
        "updated policy 'app': selects 2.0.0",
        "updated policy 'on-old'",
    ]
    assert selections(watcher)[3:] == [("app", "2.0.0", "1.2.3")] and len(watcher.stream_entries()) == before + 1
    event = watcher.stream_entries()[-1]
    assert (event["registry"], event["repository"], event["previous_digest"] != "") == ("r1", unique_repo, True)

    shown = {p["name"]: p for p in json.loads(watcher.cli("policy", "list", "--json").stdout)}
    assert sorted(shown) == ["app", "keep", "on-old"]  # `keep` is not in the file: left alone
    assert shown["app"]["policy"] == {"semver": ">=2"} and shown["app"]["selected"]["tag"] == "2.0.0"
    assert shown["on-old"]["policy"] == {"alphabetical": "asc", "filter": "^2"}


def test_a_bad_entry_saves_nothing_at_all(watcher: Watcher, registry: RegistryEnv, tmp_path: Path) -> None:
    assert watcher.add_registry("old", registry.url, "--no-verify").exit_code == 0
    good = {"name": "app", "registry": "old", "repository": "team/app", "digest": "latest"}
    new_registry = {"name": "r2", "provider": "oci", "url": registry.url}
    cases: list[tuple[dict[str, Any], str]] = [  # what the second entry changes of the first; None drops a key
        ({"colour": "blue"}, "policy #2 (bad): unknown setting 'colour'"),
        ({"semver": 1.2, "digest": None}, "semver must be a range as a string (quote it: '1.2'), not a number"),
        ({"newest_build": "true"}, "newest_build must be true or false (unquoted), not a string"),
        ({"semver": "^1"}, "policy #2 (bad): a policy takes one strategy, not --semver and --digest"),
        ({"digest": None}, "a policy needs one strategy"),
        ({"repository": None}, "policy #2 (bad): repository is missing"),
        ({"registry": "nope"}, "policy #2 (bad): no registry named 'nope' in the file or the workspace"),
        ({"name": "app"}, "policy 'app' appears twice"),
        ({"semver": "^1", "digest": None, "extract": "${v}"}, "--extract takes its groups from --filter"),
    ]
    for changes, needle in cases:
        bad = {key: value for key, value in {**good, "name": "bad", **changes}.items() if value is not None}
        path = write(tmp_path, {"registries": [new_registry], "policies": [good, bad]})
        one_line(watcher.cli("registry", "apply", "-f", path), f"{path}: ", needle)
    for text, needle in [
        ("policies: {app: {}}\n", "expected a top-level `policies:` list of mappings"),
        ("policies: []\nselections: []\n", "unknown top-level key 'selections'"),
        ("registries: []\npolicies: [{name: a, registry: old, repository: r, digest: v1, digest: v2}]\n", "twice"),
    ]:
        (tmp_path / "bad.yaml").write_text(text)
        one_line(watcher.cli("registry", "apply", "-f", str(tmp_path / "bad.yaml")), needle)
    assert [r["name"] for r in json.loads(watcher.cli("registry", "list", "--json").stdout)] == ["old"]
    assert json.loads(watcher.cli("policy", "list", "--json").stdout) == []
    only_policies = write(tmp_path, {"policies": [good]})  # a file of policies alone
    assert applied(watcher, only_policies) == ["created policy 'app'"]
