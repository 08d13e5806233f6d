"""`/api/v1/workspaces` (an operator's) and the registration routes acting in the request's workspace: two
workspaces each register a real registry named `prod`; each changes only its own; another workspace's
registry is a 404 exactly like a missing one; quotas refuse in one line and save nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import Watcher
from tests.support.fixtures import PASSWORD, USERNAME, RegistryEnv
from tests.web.conftest import Api
from tests.web.test_read_api import error_of
from tests.web.test_registration_api import entry
from watcher.db import session_scope
from watcher.models import ApiToken, Registry, Workspace
from watcher.registrations import tokens
from watcher.web.deps import WORKSPACE_HEADER

BOTH = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)


@dataclass
class Teams:
    """Workspaces team-a and team-b, each with an admin and a reader token; an operator of `default`."""

    operator: httpx.Client
    operator_token: str
    clients: dict[str, httpx.Client]


@pytest.fixture
def teams(watcher: Watcher, api: Api) -> Iterator[Teams]:
    clients: dict[str, httpx.Client] = {}
    with session_scope(watcher.engine) as session:
        operator = tokens.create(session, "ops", "operator")
    assert api.server.client(operator).post("/api/v1/workspaces", json={"name": "team-a"}).status_code == 201
    assert api.server.client(operator).post("/api/v1/workspaces", json={"name": "team-b"}).status_code == 201
    with session_scope(watcher.engine) as session:
        made = {
            f"{team}-{role}": tokens.create(session, f"{team}-{role}", role, workspace=team)
            for team in ("team-a", "team-b")
            for role in ("admin", "reader")
        }
    for name, token in made.items():
        clients[name] = api.server.client(token)
    with api.server.client(operator) as as_operator:
        yield Teams(as_operator, operator, clients)
    for client in clients.values():
        client.close()


def body(env: RegistryEnv, repository: str, **extra: Any) -> dict[str, Any]:
    return entry(env, repository, **{"name": "prod", **extra})


def stored(watcher: Watcher) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """(workspace, name) -> (interval, repositories) of every registry, from the database itself."""
    with watcher.engine.connect() as conn:
        rows = conn.execute(
            select(Workspace.name, Registry.name, Registry.interval_seconds, Registry.options).join(
                Workspace, Workspace.id == Registry.workspace_id
            )
        )
        return {(w, n): (i, list(o["repositories"])) for w, n, i, o in rows}


@BOTH
def test_an_operator_manages_workspaces_and_no_one_else_can(watcher: Watcher, api: Api, teams: Teams) -> None:
    ops = teams.operator
    listed = ops.get("/api/v1/workspaces").json()["items"]
    assert [w["name"] for w in listed] == ["default", "team-a", "team-b"]
    assert listed[1]["usage"] == {"registries": 0, "tokens": 2}

    created = ops.post("/api/v1/workspaces", json={"name": "team-c", "max_registries": 5, "min_interval": "10m"})
    assert created.status_code == 201, created.text
    assert created.json()["quotas"] == {"max_registries": 5, "min_interval": "10m", "max_concurrent_polls": None}
    error_of(ops.post("/api/v1/workspaces", json={"name": "team-c"}), 409, "conflict")
    error_of(ops.post("/api/v1/workspaces", json={"name": "Team C"}), 422, "invalid")
    error_of(ops.post("/api/v1/workspaces", json={"name": "x", "colour": 1}), 422, "invalid")
    error_of(ops.post("/api/v1/workspaces", content=b"[1]"), 422, "invalid")

    changed = ops.patch("/api/v1/workspaces/team-c", json={"max_registries": None, "max_concurrent_polls": 2})
    assert changed.status_code == 200, changed.text
    assert changed.json()["quotas"] == {"max_registries": None, "min_interval": "10m", "max_concurrent_polls": 2}
    refused = ops.patch("/api/v1/workspaces/team-c", json={"min_interval": "forever"})
    assert error_of(refused, 422, "invalid")["field"] == "min_interval"
    error_of(ops.patch("/api/v1/workspaces/team-c", json={"name": "team-d"}), 422, "invalid")
    assert ops.get("/api/v1/workspaces/team-c").json()["quotas"]["min_interval"] == "10m"
    error_of(ops.get("/api/v1/workspaces/nope"), 404, "not_found")

    # every reader and admin, of any workspace, gets 403 on every route, whether the workspace exists or not
    for who in (*teams.clients.values(), api.admin, api.reader):
        for method, path, payload in (
            ("GET", "/api/v1/workspaces", None),
            ("POST", "/api/v1/workspaces", {"name": "mine"}),
            ("GET", "/api/v1/workspaces/team-a", None),
            ("GET", "/api/v1/workspaces/nope", None),
            ("PATCH", "/api/v1/workspaces/team-a", {"max_registries": 1000}),
            ("PATCH", "/api/v1/workspaces/team-c", {"max_registries": 1000}),
            ("DELETE", "/api/v1/workspaces/team-c?force=true", None),
        ):
            answer = who.request(method, path, json=payload)
            assert error_of(answer, 403, "forbidden")["message"].startswith("token "), answer.text
    assert [w["name"] for w in ops.get("/api/v1/workspaces").json()["items"]] == [
        "default",
        "team-a",
        "team-b",
        "team-c",
    ]
    assert ops.get("/api/v1/workspaces/team-a").json()["quotas"]["max_registries"] is None

    assert ops.delete("/api/v1/workspaces/team-c").status_code == 204
    error_of(ops.delete("/api/v1/workspaces/team-c"), 404, "not_found")
    error_of(ops.delete("/api/v1/workspaces/default?force=true"), 422, "invalid")


@BOTH
def test_two_workspaces_each_register_prod_and_change_only_their_own(
    watcher: Watcher, api: Api, teams: Teams, basic_registry: RegistryEnv, unique_repo: str
) -> None:
    team_a, team_b = teams.clients["team-a-admin"], teams.clients["team-b-admin"]
    for team in ("team-a", "team-b"):
        basic_registry.client.push_image(f"{unique_repo}/{team}/app", "v1")
    # team-a registers `prod` from the command line, team-b over HTTP with its own token
    scope_a = ("--repository", f"{unique_repo}/team-a/*", "--username", USERNAME, "--password", PASSWORD)
    assert watcher.add_registry("prod", basic_registry.url, *scope_a, "--workspace", "team-a").exit_code == 0
    created = team_b.post("/api/v1/registries", json=body(basic_registry, f"{unique_repo}/team-b"))
    assert created.status_code == 201, created.text
    assert created.json()["options"]["repositories"] == [f"{unique_repo}/team-b/*"]
    error_of(team_b.post("/api/v1/registries", json=body(basic_registry, unique_repo)), 409, "conflict")
    assert set(stored(watcher)) == {("team-a", "prod"), ("team-b", "prod")}

    # each changes only its own `prod`
    changed = team_b.patch("/api/v1/registries/prod", json={"interval": "2h"})
    assert changed.status_code == 200 and changed.json()["interval"] == "2h", changed.text
    assert team_a.post("/api/v1/registries/prod/test").json() == {"ok": True}
    assert stored(watcher)[("team-a", "prod")] == (300, [f"{unique_repo}/team-a/*"])
    assert stored(watcher)[("team-b", "prod")] == (7200, [f"{unique_repo}/team-b/*"])

    # a registry of another workspace is a 404 with the body of one that does not exist, and changes nothing
    only_b = team_b.post("/api/v1/registries?verify=false", json=body(basic_registry, unique_repo, name="only-b"))
    assert only_b.status_code == 201, only_b.text
    before = stored(watcher)
    for method, suffix, payload in (
        ("PATCH", "", {"interval": "3h"}),
        ("DELETE", "", None),
        ("POST", "/test", None),
        ("POST", "/poll", None),
    ):
        theirs = team_a.request(method, f"/api/v1/registries/only-b{suffix}", json=payload)
        missing = team_a.request(method, f"/api/v1/registries/never-was{suffix}", json=payload)
        assert error_of(theirs, 404, "not_found")["message"] == error_of(missing, 404, "not_found")["message"].replace(
            "never-was", "only-b"
        )
    # naming the other workspace does not help a workspace's token: the same 404 as a workspace that does not exist
    named = team_a.patch("/api/v1/registries/only-b", json={"interval": "3h"}, headers={WORKSPACE_HEADER: "team-b"})
    nowhere = team_a.patch("/api/v1/registries/only-b", json={"interval": "3h"}, headers={WORKSPACE_HEADER: "zzz"})
    assert error_of(named, 404, "not_found")["message"] == error_of(nowhere, 404, "not_found")["message"].replace(
        "zzz", "team-b"
    )
    assert stored(watcher) == before

    # an operator acts in the workspace it names
    in_b = {WORKSPACE_HEADER: "team-b"}
    moved = teams.operator.patch("/api/v1/registries/only-b?verify=false", json={"interval": "3h"}, headers=in_b)
    assert moved.status_code == 200, moved.text
    assert teams.operator.delete("/api/v1/registries/prod", headers=in_b).status_code == 204
    assert set(stored(watcher)) == {("team-a", "prod"), ("team-b", "only-b")}
    assert stored(watcher)[("team-b", "only-b")][0] == 3 * 3600


@BOTH
def test_quotas_refuse_api_registrations_in_one_line_and_save_nothing(
    watcher: Watcher, api: Api, teams: Teams, registry: RegistryEnv
) -> None:
    quota = {"max_registries": 1, "min_interval": "30m"}
    assert teams.operator.patch("/api/v1/workspaces/team-a", json=quota).status_code == 200
    team_a = teams.clients["team-a-admin"]
    entry = {"provider": "oci", "url": registry.url, "interval": "1h"}
    fast = team_a.post("/api/v1/registries", json={"name": "fast", **entry, "interval": "10m"})
    refused = error_of(fast, 422, "quota_exceeded")
    assert refused["field"] == "interval" and "min_interval" in refused["message"] and "'team-a'" in refused["message"]
    assert team_a.post("/api/v1/registries", json={"name": "r1", **entry}).status_code == 201
    over = error_of(team_a.post("/api/v1/registries", json={"name": "r2", **entry}), 422, "quota_exceeded")
    assert "max_registries" in over["message"] and "'team-a'" in over["message"] and "\n" not in over["message"]
    error_of(team_a.patch("/api/v1/registries/r1", json={"interval": "10m"}), 422, "quota_exceeded")
    assert stored(watcher) == {("team-a", "r1"): (3600, [])}
    # team-b's quota is its own: none
    team_b = teams.clients["team-b-admin"]
    for name in ("r1", "r2"):
        answer = team_b.post("/api/v1/registries", json={"name": name, **entry, "interval": "10m"})
        assert answer.status_code == 201, answer.text


@BOTH
def test_a_revoked_operator_token_is_refused_at_once(watcher: Watcher, api: Api, teams: Teams) -> None:
    assert teams.operator.get("/api/v1/workspaces").status_code == 200
    assert watcher.cli("token", "revoke", "ops").exit_code == 0
    error_of(teams.operator.get("/api/v1/workspaces"), 401, "unauthorized")
    error_of(teams.operator.post("/api/v1/workspaces", json={"name": "late"}), 401, "unauthorized")
    assert [w["name"] for w in json.loads(watcher.cli("workspace", "list", "--json").output)] == [
        "default",
        "team-a",
        "team-b",
    ]


def test_the_first_start_writes_an_operator_token_of_default(watcher: Watcher) -> None:
    from watcher.web.server import first_admin_token

    path = first_admin_token(watcher.data_dir)
    assert path is not None and path.read_text().startswith("wt_")
    with watcher.engine.connect() as conn:
        rows = conn.execute(select(ApiToken.name, ApiToken.role, ApiToken.workspace_id)).all()
    assert [tuple(r) for r in rows] == [("admin", "operator", 1)]
    assert first_admin_token(watcher.data_dir) is None  # a token exists: nothing is written again
