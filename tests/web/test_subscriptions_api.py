"""`/api/v1/subscriptions` on the real server: create (the secret once), read, test, page deliveries,
redeliver, delete; readers only read; another workspace's subscription is a 404; bad input is a 422 naming
its field."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from tests.conftest import Watcher
from tests.support.subscription_receiver import SubscriptionReceiver
from tests.web.conftest import Api
from tests.web.test_workspace_reads import add_workspace, token_in
from watcher import schema
from watcher.schema import utcnow

BASE = "/api/v1/subscriptions"


def deliveries_of(watcher: Watcher, name: str, states: list[str]) -> list[int]:
    """An event of the default workspace and one delivery of it per state, to subscription `name`."""
    now = utcnow()
    subs = schema.subscriptions
    with watcher.engine.begin() as connection:
        subscription_id = connection.execute(subs.select().where(subs.c.name == name)).one().id
        ids = []
        for index, state in enumerate(states):
            event_id = connection.execute(
                insert(schema.events)
                .values(
                    workspace_id=1,
                    event_id=f"e-{index}",
                    registry="r1",
                    repository="team/app",
                    tag=f"v{index}",
                    change="added",
                    digest="sha256:" + "0" * 64,
                    detected_at=now,
                    cloudevent="{}",
                )
                .returning(schema.events.c.id)
            ).scalar_one()
            ids.append(
                connection.execute(
                    insert(schema.deliveries)
                    .values(
                        subscription_id=subscription_id,
                        event_id=event_id,
                        state=state,
                        attempts=3 if state == "dead" else 1,
                        created_at=now,
                        next_attempt_at=now,
                        finished_at=None if state == "pending" else now,
                        last_status=410 if state == "dead" else None,
                        last_error="HTTP 410: gone" if state == "dead" else "",
                    )
                    .returning(schema.deliveries.c.id)
                ).scalar_one()
            )
        # delivered once, before the dead letter
        connection.execute(
            update(subs).where(subs.c.id == subscription_id).values(last_delivered_at=now - timedelta(minutes=1))
        )
    return ids


def error(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()["error"]
    return body


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_subscriptions_over_http(watcher: Watcher, api: Api) -> None:
    with SubscriptionReceiver() as receiver:
        wanted = {"name": "hook", "url": f"{receiver.url}/in", "format": "cloudevents-structured"}
        created = api.admin.post(BASE, json={**wanted, "changes": ["removed", "added"]})
        assert created.status_code == 201, created.text
        body = created.json()
        secret = body.pop("secret")
        assert secret.startswith("whsec_")
        assert body | {"created_at": None} == {
            "name": "hook",
            "url": f"{receiver.url}/in",
            "format": "cloudevents-structured",
            "filters": {"changes": ["added", "removed"]},
            "state": "ok",
            "pending": 0,
            "dead": 0,
            "last_delivered_at": None,
            "last_failed_at": None,
            "last_error": "",
            "created_at": None,
        }
        # readers read, never write; nobody reads a secret again
        assert error(api.reader.post(BASE, json={**wanted, "name": "other"}), 403)["code"] == "forbidden"
        assert api.anonymous.get(BASE).status_code == 401
        listed = api.reader.get(BASE)
        assert [item["name"] for item in listed.json()["items"]] == ["hook"]
        assert api.reader.get(f"{BASE}/hook").json() == body
        assert secret not in listed.text + api.reader.get(f"{BASE}/hook").text

        # bad input: one error, naming its field
        for sent, status, field in [
            (wanted, 409, "name"),
            ({**wanted, "name": "x", "url": "ftp://h/x"}, 422, "url"),
            ({"name": "x"}, 422, "url"),
            ({**wanted, "name": "x", "nope": 1}, 422, "nope"),
            ({**wanted, "name": "x", "format": "xml"}, 422, "format"),
            ({**wanted, "name": "x", "changes": ["moved"]}, 422, "changes"),
            ({**wanted, "name": "x", "secret": "whsec_short"}, 422, "secret"),
            ({**wanted, "name": "x", "url": "http://169.254.169.254/x"}, 422, "url"),
            (
                {"name": "x", "url": "https://api.github.com/repos/o/r/dispatches", "format": "github-dispatch"},
                422,
                "secret",
            ),
        ]:
            assert error(api.admin.post(BASE, json=sent), status)["field"] == field, sent

        # a test send: the sample event, structured, answered
        answer = api.admin.post(f"{BASE}/hook/test")
        assert answer.status_code == 200, answer.text
        tested = answer.json()
        assert (tested["delivered"], tested["status"], tested["excerpt"]) == (True, 200, "thanks")
        (request,) = receiver.requests
        assert request.headers["content-type"].startswith("application/cloudevents+json")
        assert json.loads(request.body)["id"] == tested["event_id"] and tested["event_id"].startswith("test-")
        assert api.reader.post(f"{BASE}/hook/test").status_code == 403

    # deliveries, newest first, by state, keyset-paged; the dead letter makes it failing
    dead, delivered, pending = deliveries_of(watcher, "hook", ["dead", "delivered", "pending"])
    shown = api.reader.get(f"{BASE}/hook").json()
    assert (shown["state"], shown["pending"], shown["dead"]) == ("failing", 1, 1)
    page = api.reader.get(f"{BASE}/hook/deliveries", params={"limit": 2}).json()
    assert [d["id"] for d in page["items"]] == [pending, delivered] and page["next_cursor"]
    rest = api.reader.get(f"{BASE}/hook/deliveries", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [d["id"] for d in rest["items"]] == [dead] and rest["next_cursor"] is None
    (letter,) = api.reader.get(f"{BASE}/hook/deliveries", params={"state": "dead"}).json()["items"]
    assert (letter["attempts"], letter["last_status"], letter["event"]["tag"]) == (3, 410, "v0")
    assert error(api.reader.get(f"{BASE}/hook/deliveries", params={"state": "lost"}), 422)["field"] == "state"
    assert error(api.reader.get(f"{BASE}/hook/deliveries", params={"cursor": "junk"}), 422)["code"] == "invalid"

    # another workspace's subscription is missing there, for every route
    team_id = add_workspace(watcher, "team-b")
    with api.server.client(token_in(watcher, "admin-b", "admin", team_id)) as admin_b:
        assert admin_b.get(BASE).json() == {"items": []}
        for method, path in [
            ("GET", "/hook"),
            ("GET", "/hook/deliveries"),
            ("POST", "/hook/test"),
            ("DELETE", "/hook"),
        ]:
            assert error(admin_b.request(method, BASE + path), 404)["message"].startswith(
                "no subscription named 'hook'"
            )
        assert error(admin_b.post(f"{BASE}/hook/redeliver", json={"all": True}), 404)["code"] == "not_found"

    # redelivery: all, or named dead letters only
    redeliver = f"{BASE}/hook/redeliver"
    assert error(api.admin.post(redeliver, json={}), 422)["field"] == "delivery_ids"
    assert error(api.admin.post(redeliver, json={"delivery_ids": [delivered]}), 422)["field"] == "delivery_ids"
    assert api.reader.post(redeliver, json={"all": True}).status_code == 403
    assert api.admin.post(redeliver, json={"delivery_ids": [dead]}).json() == {"redelivered": 1}
    assert api.admin.post(redeliver, json={"all": True}).json() == {"redelivered": 0}
    assert api.reader.get(f"{BASE}/hook").json()["pending"] == 2

    assert api.reader.delete(f"{BASE}/hook").status_code == 403
    assert api.admin.delete(f"{BASE}/hook").status_code == 204
    assert error(api.reader.get(f"{BASE}/hook"), 404)["code"] == "not_found"
