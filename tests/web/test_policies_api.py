"""`/api/v1/policies` over HTTP on the real state database, Redis and registry: put, read and remove a policy,
its selection and history after real polls, who may write, another workspace's policy as a 404, bad bodies
as one 422 naming the field; and the open schema route, whose schema validates a real `selected` event."""

from __future__ import annotations

import html
import json
from urllib.parse import urlsplit

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import insert, update

from tests.conftest import Watcher
from tests.support import console as session_console
from tests.support.cdevents import validate_cloudevent
from tests.support.fixtures import RegistryEnv
from tests.support.polls import wait_for
from tests.web.conftest import Api
from tests.web.test_read_api import error_of
from watcher import schema
from watcher.db import session_scope
from watcher.outbox.events import SELECTED_SCHEMA_PATH, SELECTED_TYPE
from watcher.policies.store import PolicySpec, save
from watcher.registrations import store as registries
from watcher.registrations import tokens
from watcher.registrations.spec import RegistrySpec

POLICIES = "/api/v1/policies"


def field_of(response: httpx.Response) -> str | None:
    return error_of(response, 422, "invalid").get("field")


def selected_entries(watcher: Watcher) -> list[tuple[str, str, str]]:
    return [(e["policy"], e["tag"], e["previous_tag"]) for e in watcher.stream_entries() if e["change"] == "selected"]


def served_schema_validates(api: Api, entry: dict[str, str]) -> None:
    """The event's `dataschema` is our path, served without a token, and its schema validates the event."""
    cloudevent = json.loads(entry["cloudevent"])
    validate_cloudevent(cloudevent)
    assert cloudevent["type"] == SELECTED_TYPE and urlsplit(cloudevent["dataschema"]).path == SELECTED_SCHEMA_PATH
    served = api.anonymous.get(SELECTED_SCHEMA_PATH)
    assert served.status_code == 200 and served.headers["content-type"] == "application/schema+json"
    Draft202012Validator(served.json(), format_checker=FormatChecker()).validate(cloudevent["data"])


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_put_read_and_remove_a_policy_its_selection_events_and_who_may_write(
    watcher: Watcher, api: Api, registry: RegistryEnv, unique_repo: str
) -> None:
    first = registry.client.push_image(unique_repo, "1.2.3")
    registry.client.retag(unique_repo, "1.2.3", "latest")
    assert watcher.add_registry("r1", registry.url, "--repository", unique_repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    body = {"registry": "r1", "repository": unique_repo, "semver": "^1.2"}

    error_of(api.anonymous.put(f"{POLICIES}/app", json=body), 401, "unauthorized")
    error_of(api.reader.put(f"{POLICIES}/app", json=body), 403, "forbidden")
    created = api.admin.put(f"{POLICIES}/app", json=body)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["selected"]["tag"] == "1.2.3" and shown["selected"]["digest"] == first
    assert shown["selected"]["reference"] == f"{registry.host}/{unique_repo}:1.2.3@{first}"
    assert shown["selected"]["since"] and (shown["considered"], shown["ignored"]) == (1, 1)  # `latest`: no version
    assert (shown["policy"], shown["strategy"]) == ({"semver": "^1.2"}, "semver ^1.2")
    assert [(h["change"], h["tag"], h["previous_tag"]) for h in shown["history"]] == [("selected", "1.2.3", "")]
    # the first selection reaches the stream without waiting for a poll or the relay's sweep
    assert wait_for(lambda: selected_entries(watcher) == [("app", "1.2.3", "")], 5), watcher.stream_entries()

    newer = registry.client.push_image(unique_repo, "1.2.4")
    assert watcher.cli("poll", "r1").exit_code == 0  # a real poll: the selection moves, one `selected` event
    entry = watcher.stream_entries()[-1]
    assert (entry["change"], entry["tag"], entry["previous_tag"], entry["digest"]) == (
        "selected",
        "1.2.4",
        "1.2.3",
        newer,
    )
    served_schema_validates(api, entry)

    listed = api.reader.get(POLICIES).json()["items"]
    assert [(p["name"], p["selected"]["tag"], p["considered"]) for p in listed] == [("app", "1.2.4", 2)]
    assert [p["name"] for p in api.reader.get(POLICIES, params={"registry": "r1"}).json()["items"]] == ["app"]
    assert api.reader.get(POLICIES, params={"registry": "r2"}).json() == {"items": []}
    one = api.reader.get(f"{POLICIES}/app").json()
    assert [(h["tag"], h["previous_tag"], h["previous_digest"]) for h in one["history"]] == [
        ("1.2.4", "1.2.3", first),
        ("1.2.3", "", ""),
    ]
    assert [h["tag"] for h in api.reader.get(f"{POLICIES}/app", params={"history": 1}).json()["history"]] == ["1.2.4"]
    assert api.reader.get(f"{POLICIES}/app", params={"history": 0}).json()["history"] == []
    history = api.reader.get("/api/v1/events", params={"change": "selected"})  # the history shows them too
    assert history.status_code == 200, history.text
    assert [(e["policy"], e["tag"], e["previous_tag"]) for e in history.json()["items"]] == [
        ("app", "1.2.4", "1.2.3"),
        ("app", "1.2.3", ""),
    ]

    same = api.admin.put(f"{POLICIES}/app", json={**body, "name": "app"})
    assert same.status_code == 200 and len(same.json()["history"]) == 2  # as it was: no event
    pinned = api.admin.put(f"{POLICIES}/app", json={"registry": "r1", "repository": unique_repo, "digest": "latest"})
    assert pinned.status_code == 200 and pinned.json()["selected"]["tag"] == "latest"
    assert wait_for(lambda: selected_entries(watcher)[-1] == ("app", "latest", "1.2.4"), 5)

    error_of(api.reader.delete(f"{POLICIES}/app"), 403, "forbidden")
    assert api.admin.delete(f"{POLICIES}/app").status_code == 204
    assert "no policy named 'app'" in error_of(api.reader.get(f"{POLICIES}/app"), 404, "not_found")["message"]
    error_of(api.admin.delete(f"{POLICIES}/app"), 404, "not_found")
    error_of(api.reader.get(f"{POLICIES}/a%00b"), 404, "not_found")
    error_of(api.admin.delete(f"{POLICIES}/a%00b"), 404, "not_found")

    # bad input: one 422 naming the field, nothing saved
    good = {"registry": "r1", "repository": unique_repo}
    for sent, field in (
        ({**good, "semver": "^1", "numeric": "asc"}, "strategy"),
        (good, "strategy"),
        ({**good, "semver": "not a range"}, "semver"),
        ({**good, "semver": 5}, "semver"),
        ({**good, "numeric": "up"}, "numeric"),
        ({**good, "newest_build": "yes"}, "newest_build"),
        ({**good, "semver": "*", "filter": "a\x00"}, "filter"),
        ({**good, "semver": "*", "colour": "red"}, "colour"),
        ({**good, "semver": "*", "name": "other"}, "name"),
        ({**good, "registry": "nope", "semver": "*"}, "registry"),
        ({"repository": unique_repo, "semver": "*"}, "registry"),
        ({**good, "repository": "Upper/Case", "semver": "*"}, "repository"),
    ):
        assert field_of(api.admin.put(f"{POLICIES}/app", json=sent)) == field, sent
    assert (
        "RE2"
        in error_of(api.admin.put(f"{POLICIES}/app", json={**good, "semver": "*", "filter": "("}), 422, "invalid")[
            "message"
        ]
    )
    assert field_of(api.admin.put(f"{POLICIES}/Not_A_Name", json={**good, "semver": "*"})) == "name"
    error_of(
        api.admin.put(f"{POLICIES}/app", content=b"{", headers={"content-type": "application/json"}), 400, "malformed"
    )
    assert api.reader.get(POLICIES).json() == {"items": []}


def test_another_workspaces_policy_is_missing_like_one_that_does_not_exist_and_the_schema_is_open(
    watcher: Watcher, api: Api
) -> None:
    served = api.anonymous.get(SELECTED_SCHEMA_PATH)
    assert served.status_code == 200 and served.headers["content-type"] == "application/schema+json"
    assert served.json()["title"] == SELECTED_TYPE
    Draft202012Validator.check_schema(served.json())
    assert SELECTED_SCHEMA_PATH not in api.anonymous.get("/openapi.json").json()["paths"]  # not the API
    error_of(api.anonymous.get("/schemas/cdevents/other.json"), 404, "not_found")
    error_of(api.anonymous.get(SELECTED_SCHEMA_PATH, headers={"Host": "evil.example"}), 400, "bad_request")

    with watcher.engine.begin() as connection:
        team = connection.execute(insert(schema.workspaces).values(name="team-b").returning(schema.workspaces.c.id))
        team_id = int(team.scalar_one())
    with session_scope(watcher.engine) as session:
        registries.save(session, RegistrySpec("prod", "oci", "https://b.example.com", workspace="team-b"))
    with session_scope(watcher.engine) as session:
        save(session, PolicySpec.build("theirs", "prod", "team/app", semver="*"), workspace_id=team_id)
        operator = tokens.create(session, "test-operator", "admin")
    with watcher.engine.begin() as connection:
        table = schema.api_tokens
        connection.execute(update(table).where(table.c.name == "test-operator").values(role="operator"))

    def message(response: httpx.Response) -> str:
        return str(error_of(response, 404, "not_found")["message"])

    assert message(api.reader.get(f"{POLICIES}/theirs")) == message(api.reader.get(f"{POLICIES}/nosuch")).replace(
        "nosuch", "theirs"
    )
    assert api.reader.get(POLICIES).json() == {"items": []}
    error_of(api.admin.delete(f"{POLICIES}/theirs"), 404, "not_found")
    error_of(api.reader.get(f"{POLICIES}/theirs", headers={"X-Watcher-Workspace": "team-b"}), 404, "not_found")
    body = {"registry": "prod", "repository": "team/app", "semver": "*"}  # their registry is not one of ours
    assert field_of(api.admin.put(f"{POLICIES}/theirs", json=body)) == "registry"

    with api.server.client(operator) as as_operator:
        seen = as_operator.get(f"{POLICIES}/theirs", headers={"X-Watcher-Workspace": "team-b"})
        assert seen.status_code == 200 and (seen.json()["registry"], seen.json()["selected"]) == ("prod", None)

    # the console alike: their policy is the page of a missing one; an operator switching from a policy's
    # page lands on the policies of the workspace chosen
    with session_console.log_in(api.server.url, api.reader_token) as reader:
        theirs, nosuch = reader.get("/console/policies/theirs"), reader.get("/console/policies/nosuch")
        assert theirs.status_code == nosuch.status_code == 404
        assert html.unescape(theirs.text) == html.unescape(nosuch.text).replace("nosuch", "theirs")
        assert 'data-policy="theirs"' not in reader.get("/console/policies").text
    with session_console.log_in(api.server.url, operator) as console:
        form = {"csrf": session_console.csrf_of(console.get("/console/")), "workspace": "team-b"}
        switched = console.post("/console/workspace", data={**form, "back": "/console/policies/app"})
        assert (switched.status_code, switched.headers["location"]) == (303, "/console/policies")
        assert 'data-policy="theirs"' in console.get("/console/policies").text

    with api.server.client(operator) as as_operator:
        assert as_operator.delete(f"{POLICIES}/theirs", headers={"X-Watcher-Workspace": "team-b"}).status_code == 204
