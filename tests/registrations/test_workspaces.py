"""`watcher workspace` and the quotas at registration: one line for every refusal, nothing saved by one, and
two workspaces that each register a real registry named `prod` and see and change only their own."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv
from watcher.db import session_scope
from watcher.errors import QuotaError
from watcher.models import Registry, Repository, Workspace
from watcher.registrations import store, workspaces
from watcher.registrations.spec import RegistrySpec

BOTH = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)


def one_line_error(result: Any, *needles: str) -> str:
    """The failure's one line on stderr (exit 1 or 2), containing every needle."""
    assert result.exit_code in (1, 2), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("watcher: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return str(lines[0])


def registries_in(watcher: Watcher, workspace: str) -> dict[str, int]:
    """Name -> interval of the registries of `workspace`, from the database itself."""
    with watcher.engine.connect() as conn:
        rows = conn.execute(
            select(Registry.name, Registry.interval_seconds)
            .join(Workspace, Workspace.id == Registry.workspace_id)
            .where(Workspace.name == workspace)
        )
        return {name: interval for name, interval in rows}


def shown(watcher: Watcher, name: str) -> dict[str, Any]:
    result = watcher.cli("workspace", "show", name, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


@BOTH
def test_a_workspace_is_created_listed_shown_given_quotas_and_deleted(watcher: Watcher) -> None:
    created = watcher.cli("workspace", "create", "team-a", "--max-registries", "2", "--min-interval", "5m")
    assert created.exit_code == 0, created.output
    one_line_error(watcher.cli("workspace", "create", "team-a"), "'team-a' already exists")
    one_line_error(watcher.cli("workspace", "create", "Team_A"), "'Team_A' is not a workspace name")
    one_line_error(watcher.cli("workspace", "create", "a/b"), "is not a workspace name")
    one_line_error(watcher.cli("workspace", "create", "pace"), "'pace' is reserved", "relay-lock")
    assert shown(watcher, "team-a")["quotas"] == {
        "max_registries": 2,
        "min_interval": "5m",
        "max_concurrent_polls": None,
    }

    listed = json.loads(watcher.cli("workspace", "list", "--json").output)
    assert [w["name"] for w in listed] == ["default", "team-a"]
    assert watcher.cli("token", "create", "ci", "--workspace", "team-a", "--role", "reader").exit_code == 0
    added = watcher.add_registry(
        "prod", "https://r.example.com", "--no-verify", "--interval", "5m", "--workspace", "team-a"
    )
    assert added.exit_code == 0, added.output
    assert shown(watcher, "team-a")["usage"] == {"registries": 1, "tokens": 1}
    table = watcher.cli("workspace", "list").output.splitlines()
    assert table[0].split()[:3] == ["NAME", "REGISTRIES", "TOKENS"] and table[2].split()[:4] == [
        "team-a",
        "1",
        "1",
        "2",
    ]

    changed = watcher.cli("workspace", "quota", "team-a", "--max-concurrent-polls", "3", "--min-interval", "none")
    assert changed.exit_code == 0 and "min_interval: none" in changed.output, changed.output
    assert shown(watcher, "team-a")["quotas"] == {"max_registries": 2, "min_interval": None, "max_concurrent_polls": 3}
    for option, value in (("--max-registries", "-1"), ("--max-concurrent-polls", "0"), ("--min-interval", "40d")):
        one_line_error(watcher.cli("workspace", "quota", "team-a", option, value), option, "none clears it")
    one_line_error(watcher.cli("workspace", "quota", "nope", "--max-registries", "1"), "no workspace named 'nope'")
    assert shown(watcher, "team-a")["quotas"]["max_concurrent_polls"] == 3  # a refused change changed nothing

    one_line_error(watcher.cli("workspace", "delete", "team-a"), "owns 1 registry", "--force")
    assert registries_in(watcher, "team-a") == {"prod": 300}
    one_line_error(watcher.cli("workspace", "delete", "default", "--force"), "'default' cannot be deleted")
    deleted = watcher.cli("workspace", "delete", "team-a", "--force")
    assert deleted.exit_code == 0 and "and its 1 registry" in deleted.output, deleted.output
    one_line_error(watcher.cli("workspace", "show", "team-a"), "no workspace named 'team-a'")
    with watcher.engine.connect() as conn:  # its registry and its token went with it
        assert conn.scalar(select(func.count()).select_from(Registry)) == 0
        assert watcher.cli("token", "list", "--all-workspaces", "--json").output.strip() == "[]"


@BOTH
def test_quotas_refuse_registrations_in_one_line_and_save_nothing(watcher: Watcher, tmp_path: Path) -> None:
    assert watcher.cli("workspace", "create", "small", "--max-registries", "2", "--min-interval", "1m").exit_code == 0

    def add(name: str, interval: str = "1m") -> Any:
        return watcher.add_registry(
            f"{name}", "https://r.example.com", "--no-verify", "--interval", interval, "--workspace", "small"
        )

    line = one_line_error(add("fast", "30s"), "min_interval", "'small'", "30s", "1m")
    assert "nothing was saved" in line
    assert add("r1").exit_code == 0 and add("r2").exit_code == 0
    one_line_error(add("r3"), "max_registries", "'small'", "2")
    assert registries_in(watcher, "small") == {"r1": 60, "r2": 60}

    # apply checks every entry before it saves any: one over the quota refuses the whole file
    def apply(entries: list[dict[str, Any]]) -> Any:
        path = tmp_path / "registries.yaml"
        path.write_text(yaml.safe_dump({"registries": entries}))
        return watcher.cli("--workspace", "small", "registry", "apply", "-f", str(path), "--no-verify")

    entry = {"provider": "oci", "url": "https://r.example.com", "interval": "2m"}
    one_line_error(apply([{"name": "r1", **entry}, {"name": "r3", **entry}]), "max_registries", "'small'")
    assert registries_in(watcher, "small") == {"r1": 60, "r2": 60}  # r1's new interval was not saved either
    one_line_error(apply([{"name": "r1", **entry}, {"name": "r2", **entry, "interval": "10s"}]), "min_interval")
    assert registries_in(watcher, "small") == {"r1": 60, "r2": 60}
    applied = apply([{"name": "r1", **entry}, {"name": "r2", **entry}])  # changes, no new registry: admitted
    assert applied.exit_code == 0 and "updated registry 'r1' in workspace 'small'" in applied.output, applied.output
    assert registries_in(watcher, "small") == {"r1": 120, "r2": 120}

    # a lowered quota keeps what is registered; an untouched interval under it stays, a changed one is refused
    assert watcher.cli("workspace", "quota", "small", "--min-interval", "5m", "--max-registries", "1").exit_code == 0
    assert apply([{"name": "r1", **entry}]).exit_code == 0
    one_line_error(apply([{"name": "r1", **entry, "interval": "3m"}]), "min_interval", "5m")
    assert watcher.cli("workspace", "quota", "small", "--max-registries", "none").exit_code == 0
    assert add("r3", "5m").exit_code == 0
    assert registries_in(watcher, "small") == {"r1": 120, "r2": 120, "r3": 300}

    # the workspace `default` has no quota unless one is set, and its registries are not counted in `small`'s
    assert watcher.add_registry("r9", "https://r.example.com", "--no-verify", "--interval", "10s").exit_code == 0


@BOTH
def test_racing_registrations_cannot_pass_max_registries_together(watcher: Watcher) -> None:
    """Eight registrations of new names at once into a workspace with room for three: the workspace row's lock
    makes each count the ones committed before it, so exactly three are saved and five refused by the quota."""
    assert watcher.cli("workspace", "create", "race", "--max-registries", "3").exit_code == 0
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def register(number: int) -> None:
        spec = RegistrySpec(name=f"r{number}", provider="oci", url="https://r.example.com", workspace="race")
        barrier.wait()
        try:
            with session_scope(watcher.engine) as session:
                store.create(session, spec)
            outcomes.append("created")
        except QuotaError:
            outcomes.append("refused")

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 5
    assert len(registries_in(watcher, "race")) == 3


@BOTH
def test_write_commands_act_in_their_workspace(watcher: Watcher, basic_registry: RegistryEnv, unique_repo: str) -> None:
    """Two workspaces each register a real registry named `prod`, watching different repositories; each
    command acts on its workspace's own, and a workspace that does not exist is one line."""
    for team in ("team-a", "team-b"):
        assert watcher.cli("workspace", "create", team).exit_code == 0
        basic_registry.client.push_image(f"{unique_repo}/{team}/app", "v1")
    credentials = ("--username", USERNAME, "--password", PASSWORD)
    for team in ("team-a", "team-b"):
        scope = ("--repository", f"{unique_repo}/{team}/*")
        added = watcher.add_registry("prod", basic_registry.url, *credentials, *scope, "--workspace", team)
        assert added.exit_code == 0, added.output
    one_line_error(
        watcher.add_registry("prod", basic_registry.url, *credentials, "--workspace", "team-a"),
        "'prod' already exists",
    )
    assert registries_in(watcher, "team-a") == registries_in(watcher, "team-b") == {"prod": 300}
    assert registries_in(watcher, "default") == {}

    for team in ("team-a", "team-b"):
        tested = watcher.cli("--workspace", team, "registry", "test", "prod")
        assert tested.exit_code == 0, tested.output
        polled = watcher.cli("poll", "prod", "--workspace", team)
        assert polled.exit_code == 0, polled.output
    with watcher.engine.connect() as conn:
        listed = conn.execute(
            select(Workspace.name, Repository.name)
            .join(Registry, Registry.id == Repository.registry_id)
            .join(Workspace, Workspace.id == Registry.workspace_id)
        ).all()
    assert sorted(listed) == [("team-a", f"{unique_repo}/team-a/app"), ("team-b", f"{unique_repo}/team-b/app")]

    for command in (("registry", "test", "prod"), ("registry", "remove", "prod"), ("poll", "prod")):
        one_line_error(watcher.cli("--workspace", "nope", *command), "no workspace named 'nope'")
        one_line_error(watcher.cli("--workspace", "team-a", *command[:-1], "other"), "no registry named 'other'")
    one_line_error(
        watcher.add_registry("x", basic_registry.url, "--no-verify", "--workspace", "nope"), "no workspace named 'nope'"
    )

    removed = watcher.cli("registry", "remove", "prod", "--workspace", "team-b")
    assert removed.exit_code == 0 and "in workspace 'team-b'" in removed.output
    assert registries_in(watcher, "team-a") == {"prod": 300} and registries_in(watcher, "team-b") == {}
    one_line_error(watcher.cli("registry", "remove", "prod"), "no registry named 'prod'")  # none in default


@BOTH
def test_tokens_belong_to_a_workspace(watcher: Watcher) -> None:
    assert watcher.cli("workspace", "create", "team-a").exit_code == 0
    for workspace in ("default", "team-a"):  # one name in two workspaces
        created = watcher.cli("token", "create", "ci", "--role", "admin", "--workspace", workspace)
        assert created.exit_code == 0 and created.output.startswith("wt_"), created.output
    one_line_error(watcher.cli("token", "create", "ci", "--role", "reader", "--workspace", "team-a"), "already exists")
    one_line_error(watcher.cli("token", "create", "x", "--role", "reader", "--workspace", "nope"), "no workspace")
    assert watcher.cli("--workspace", "team-a", "token", "create", "ops", "--role", "operator").exit_code == 0

    mine = json.loads(watcher.cli("token", "list", "--json", "--workspace", "team-a").output)
    assert [(t["name"], t["workspace"], t["role"]) for t in mine] == [
        ("ci", "team-a", "admin"),
        ("ops", "team-a", "operator"),
    ]
    every = json.loads(watcher.cli("token", "list", "--json", "--all-workspaces").output)
    assert sorted((t["workspace"], t["name"]) for t in every) == [
        ("default", "ci"),
        ("team-a", "ci"),
        ("team-a", "ops"),
    ]

    assert watcher.cli("token", "revoke", "ci", "--workspace", "team-a").exit_code == 0
    states = {
        (t["workspace"], t["name"]): t["state"]
        for t in json.loads(watcher.cli("token", "list", "--json", "--all-workspaces").output)
    }
    assert states == {("default", "ci"): "active", ("team-a", "ci"): "revoked", ("team-a", "ops"): "active"}
    one_line_error(watcher.cli("token", "revoke", "ops"), "no active token named 'ops' in workspace 'default'")


def test_workspace_names_and_quota_values_are_checked(watcher: Watcher) -> None:
    with session_scope(watcher.engine) as session:
        for name in ("", "-a", "a" * 64, "a\x00", "A"):
            with pytest.raises(Exception, match="is not a workspace name"):
                workspaces.create(session, name)
        with pytest.raises(Exception, match="unknown quota 'colour'"):
            workspaces.parse_quotas({"colour": 1})
        with pytest.raises(Exception, match="max_registries must be a whole number"):
            workspaces.parse_quotas({"max_registries": True})
        assert workspaces.parse_quotas({"max_registries": None, "min_interval": 600}) == {
            "max_registries": None,
            "min_interval_seconds": 600,
        }
