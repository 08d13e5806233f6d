"""Everything that reads stays within one workspace (issue 15): two workspaces each register a registry
named `prod` on the real registry and poll it; each sees only its own registries, polls, repositories, tags,
events (history, replay and the live stream) and status, through every API GET route and the CLI. Another
workspace's registry is a 404 with the body of one that does not exist; an operator reads the workspace
`X-Watcher-Workspace` names, anyone else naming another workspace gets a 404."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.polls import set_row, try_poll
from tests.web.conftest import Api
from watcher import schema
from watcher.db import session_scope
from watcher.models import utcnow
from watcher.registrations import store as registries
from watcher.registrations import tokens
from watcher.registrations.spec import RegistrySpec

TEAM = "team-b"
HEADER = "X-Watcher-Workspace"


@dataclass
class Teams:
    """The default workspace's `prod` watches `alpha`, team-b's `prod` watches `beta` (and team-b alone has
    `only-b`, never polled); a reader token in each, and an operator."""

    alpha: str
    beta: str
    reader_a: httpx.Client
    reader_b: httpx.Client
    operator: httpx.Client
    tokens: dict[str, str]


def add_workspace(watcher: Watcher, name: str) -> int:
    """A second workspace, straight into its table (creating workspaces is not what is tested here)."""
    with watcher.engine.begin() as connection:
        statement = insert(schema.workspaces).values(name=name).returning(schema.workspaces.c.id)
        return int(connection.execute(statement).scalar_one())


def token_in(watcher: Watcher, name: str, role: str, workspace_id: int) -> str:
    """A token of `role` in the workspace (set on its row: the token commands are another part's)."""
    with session_scope(watcher.engine) as session:
        token = tokens.create(session, name, "reader")
    with watcher.engine.begin() as connection:
        table = schema.api_tokens
        connection.execute(update(table).where(table.c.name == name).values(role=role, workspace_id=workspace_id))
    return token


def register(watcher: Watcher, name: str, url: str, repository: str, workspace: str) -> None:
    with session_scope(watcher.engine) as session:
        spec = RegistrySpec(
            name, "oci", url, options={"repositories": [repository]}, emit_existing=True, workspace=workspace
        )
        _, outcome = registries.save(session, spec)
        assert outcome == "created"


def poll(key: str) -> None:
    assert try_poll(key), f"{key} was busy"


@pytest.fixture
def teams(watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str) -> Any:
    alpha, beta = f"{unique_repo}/alpha", f"{unique_repo}/beta"
    registry.client.push_image(alpha, "v1")
    registry.client.push_image(beta, "v1")
    registry.client.push_image(beta, "v2")
    team_id = add_workspace(watcher, TEAM)
    register(watcher, "prod", registry.url, alpha, "default")
    register(watcher, "prod", registry.url, beta, TEAM)
    register(watcher, "only-b", registry.url, beta, TEAM)
    poll("prod")
    poll(f"{TEAM}/prod")
    secrets = {
        "reader-b": token_in(watcher, "reader-b", "reader", team_id),
        "operator": token_in(watcher, "operator", "operator", schema.DEFAULT_WORKSPACE_ID),
    }
    with (
        api.server.client(secrets["reader-b"]) as reader_b,
        api.server.client(secrets["operator"]) as operator,
    ):
        yield Teams(alpha, beta, api.reader, reader_b, operator, {"reader-a": api.reader_token, **secrets})


def get(client: httpx.Client, path: str, **headers: str) -> Any:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def seen_by(client: httpx.Client, teams: Teams, **headers: str) -> dict[str, Any]:
    """What one client reads through every GET route of the registries and events."""
    listed = get(client, "/api/v1/registries", **headers)["items"]
    shown = get(client, "/api/v1/registries/prod", **headers)
    repositories = get(client, "/api/v1/registries/prod/repositories", **headers)["items"]
    tags = {
        repository: [
            t["tag"] for t in get(client, f"/api/v1/registries/prod/repositories/{repository}/tags", **headers)["items"]
        ]
        for repository in (teams.alpha, teams.beta)
    }
    events = get(client, "/api/v1/events", **headers)["items"]
    filtered = get(client, "/api/v1/events?registry=prod", **headers)["items"]
    polls = get(client, "/api/v1/registries/prod/polls", **headers)["items"]
    return {
        "registries": sorted(r["name"] for r in listed),
        "tags_of_prod": shown["status"]["tags"],
        "repositories": [r["name"] for r in repositories],
        "tags": tags,
        "events": sorted((e["repository"], e["tag"]) for e in events),
        "filtered": sorted((e["repository"], e["tag"]) for e in filtered),
        "polls": [p["id"] for p in polls],
    }


def poll_ids(watcher: Watcher, key: str) -> list[int]:
    from tests.support.polls import runs_of

    return [run.id for run in reversed(runs_of(watcher, key))]


def expected(watcher: Watcher, teams: Teams, workspace: str) -> dict[str, Any]:
    if workspace == "default":
        mine = {teams.alpha: ["v1"], teams.beta: []}
        return {
            "registries": ["prod"],
            "tags_of_prod": 1,
            "repositories": [teams.alpha],
            "tags": mine,
            "events": [(teams.alpha, "v1")],
            "filtered": [(teams.alpha, "v1")],
            "polls": poll_ids(watcher, "prod"),
        }
    return {
        "registries": ["only-b", "prod"],
        "tags_of_prod": 2,
        "repositories": [teams.beta],
        "tags": {teams.alpha: [], teams.beta: ["v1", "v2"]},
        "events": [(teams.beta, "v1"), (teams.beta, "v2")],
        "filtered": [(teams.beta, "v1"), (teams.beta, "v2")],
        "polls": poll_ids(watcher, f"{TEAM}/prod"),
    }


def not_found(client: httpx.Client, path: str, **headers: str) -> dict[str, Any]:
    response = client.get(path, headers=headers)
    assert response.status_code == 404, response.text
    return dict(response.json())


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_each_workspace_reads_only_its_own_through_every_get_route(watcher: Watcher, teams: Teams) -> None:
    default, team = expected(watcher, teams, "default"), expected(watcher, teams, TEAM)
    assert default["polls"] and team["polls"] and not set(default["polls"]) & set(team["polls"])
    assert seen_by(teams.reader_a, teams) == default
    assert seen_by(teams.reader_b, teams) == team
    # an operator acts in its token's workspace, or in the one it names
    assert seen_by(teams.operator, teams) == default
    assert seen_by(teams.operator, teams, **{HEADER: TEAM}) == team
    assert seen_by(teams.operator, teams, **{HEADER: "default"}) == default


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_another_workspaces_registry_is_a_404_like_a_missing_one(watcher: Watcher, teams: Teams) -> None:
    routes = ("", "/polls", "/repositories", f"/repositories/{teams.beta}/tags")
    for route in routes:
        theirs = not_found(teams.reader_a, f"/api/v1/registries/only-b{route}")
        missing = not_found(teams.reader_a, f"/api/v1/registries/no-such{route}")
        assert json.dumps(theirs).replace("only-b", "no-such") == json.dumps(missing)
        assert get(teams.reader_b, f"/api/v1/registries/only-b{route}") is not None  # it is there, in team-b
    # an event filter naming another workspace's registry finds nothing, as one naming no registry
    assert get(teams.reader_a, "/api/v1/events?registry=only-b")["items"] == []


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_naming_another_workspace_is_a_404_for_all_but_an_operator(watcher: Watcher, teams: Teams) -> None:
    for path in ("/api/v1/registries", "/api/v1/events", "/api/v1/registries/prod", "/api/v1/events/stream"):
        theirs = not_found(teams.reader_a, path, **{HEADER: TEAM})
        none = not_found(teams.reader_a, path, **{HEADER: "no-such-team"})
        assert json.dumps(theirs).replace(TEAM, "no-such-team") == json.dumps(none)
        not_found(teams.reader_b, path, **{HEADER: "default"})
        not_found(teams.operator, path, **{HEADER: "no-such-team"})
    # naming one's own workspace is what not naming one is
    assert seen_by(teams.reader_b, teams, **{HEADER: TEAM}) == expected(watcher, teams, TEAM)


def read_sse(url: str, headers: dict[str, str], want: int, out: list[dict[str, Any]], first: threading.Event) -> None:
    """Events of the stream into `out` until `want` came; `first` is set at the first one."""
    with httpx.Client(timeout=20) as client, client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line.removeprefix("data: ")))
                first.set()
                if len(out) >= want:
                    return


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_the_event_stream_replays_and_delivers_only_the_workspaces_own_events(
    watcher: Watcher, api: Api, teams: Teams, registry: RegistryEnv
) -> None:
    url = f"{api.server.url}/api/v1/events/stream"
    newest = {
        "reader-a": get(teams.reader_a, "/api/v1/events")["items"][0],
        "reader-b": get(teams.reader_b, "/api/v1/events")["items"][0],
    }
    streams: dict[str, list[dict[str, Any]]] = {"reader-a": [], "reader-b": []}
    readers = []
    for who, wanted in (("reader-a", 2), ("reader-b", 2)):
        # resume just before the workspace's newest event: it is replayed first, so once it came the stream
        # is live (and a leak of the other workspace's history would show among the replayed)
        first = threading.Event()
        headers = {"Authorization": f"Bearer {teams.tokens[who]}", "Last-Event-ID": str(newest[who]["id"] - 1)}
        thread = threading.Thread(target=read_sse, args=(url, headers, wanted, streams[who], first), daemon=True)
        thread.start()
        assert first.wait(15), f"{who}'s replay did not come"
        readers.append(thread)
    # the other workspace's new event is committed first: a stream that leaked it would end with it
    registry.client.push_image(teams.beta, "v3")
    poll(f"{TEAM}/prod")
    registry.client.push_image(teams.alpha, "v2")
    poll("prod")
    for thread in readers:
        thread.join(20)
    assert [(e["repository"], e["tag"]) for e in streams["reader-a"]] == [(teams.alpha, "v1"), (teams.alpha, "v2")]
    assert [(e["repository"], e["tag"]) for e in streams["reader-b"]] == [
        (teams.beta, newest["reader-b"]["tag"]),
        (teams.beta, "v3"),
    ]

    # a replay of the whole history holds the workspace's own events only
    replayed: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {teams.tokens['reader-a']}", "Last-Event-ID": "0"}
    read_sse(url, headers, 2, replayed, threading.Event())
    assert [(e["repository"], e["tag"]) for e in replayed] == [(teams.alpha, "v1"), (teams.alpha, "v2")]


def cli_lines(watcher: Watcher, *args: str) -> list[Any]:
    """A command's JSON lines (`images`, `events`)."""
    result = watcher.cli(*args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def cli_json(watcher: Watcher, *args: str) -> Any:
    """A command's one JSON document (`registry list/show`, `status`)."""
    result = watcher.cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_cli_reads_in_its_workspace(watcher: Watcher, teams: Teams, monkeypatch: pytest.MonkeyPatch) -> None:
    later = utcnow() + timedelta(hours=1)
    set_row(watcher, "prod", next_poll_at=later, due_since=None)
    set_row(watcher, f"{TEAM}/only-b", next_poll_at=later, due_since=None)
    set_row(watcher, f"{TEAM}/prod", next_poll_at=utcnow() - timedelta(minutes=10), due_since=None)
    for flags, workspace in (((), "default"), (("--workspace", TEAM), TEAM)):
        want = expected(watcher, teams, workspace)
        listed = cli_json(watcher, "registry", "list", "--json", *flags)
        assert sorted(r["name"] for r in listed) == want["registries"]
        shown = cli_json(watcher, "registry", "show", "prod", "--json", *flags)
        assert shown["status"]["tags"] == want["tags_of_prod"]
        assert shown["last_poll"]["id"] == want["polls"][0]
        images = cli_lines(watcher, "images", "prod", "--json", *flags)
        assert [(i["repository"], i["tag"]) for i in images] == want["events"]
        events = cli_lines(watcher, "events", "--json", *flags)
        assert sorted((e["repository"], e["tag"]) for e in events) == want["events"]
        statuses = cli_json(watcher, "status", "--json", *flags)
        assert sorted(s["name"] for s in statuses) == want["registries"]
    # the root group's option and WATCHER_WORKSPACE name it too
    assert [i["tag"] for i in cli_lines(watcher, "--workspace", TEAM, "images", "prod", "--json")] == ["v1", "v2"]
    monkeypatch.setenv("WATCHER_WORKSPACE", TEAM)
    from watcher.settings import get_settings

    get_settings.cache_clear()
    assert [i["tag"] for i in cli_lines(watcher, "images", "prod", "--json")] == ["v1", "v2"]
    # status shows the workspace's own schedule lag: team-b's prod is 10 minutes late, default's nothing
    team_status = watcher.cli("status").stdout
    assert "schedule lag in workspace 'team-b': " in team_status
    lag = float(team_status.split("schedule lag in workspace 'team-b': ")[1].split()[0])
    assert 590 <= lag <= 900
    monkeypatch.delenv("WATCHER_WORKSPACE")
    get_settings.cache_clear()
    assert "schedule lag in workspace 'default': 0.0 s" in watcher.cli("status").stdout

    # another workspace's registry is missing, in the same words as one that does not exist
    theirs, missing = watcher.cli("images", "only-b"), watcher.cli("images", "no-such")
    assert theirs.exit_code == missing.exit_code == 1
    assert theirs.stderr.replace("only-b", "no-such") == missing.stderr
    assert len(theirs.stderr.strip().splitlines()) == 1
    shown_theirs = watcher.cli("registry", "show", "only-b")
    assert shown_theirs.exit_code == 1 and "no registry named 'only-b'" in shown_theirs.stderr
    # a workspace that does not exist is one line
    for command in (("status",), ("registry", "list"), ("images", "prod"), ("events",), ("registry", "show", "prod")):
        result = watcher.cli(*command, "--workspace", "no-such-team")
        assert result.exit_code == 1
        assert result.stderr.strip() == "watcher: no workspace named 'no-such-team': see `watcher workspace list`"
