"""`watcher subscription` end to end on a real installation: a real registry polled into real deliveries,
a real HTTP endpoint answering `test`. The secret is printed once and never again; every failure is one line."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from click.testing import Result
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from tests.conftest import Watcher
from tests.support.fixtures import RegistryEnv
from tests.support.subscription_receiver import SubscriptionReceiver
from watcher import schema
from watcher.db import session_scope
from watcher.registrations import workspaces

DEAD_ERROR = "HTTP 410: <b>gone</b>"


def one_line_failure(result: Result, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, result.output
    err = result.stderr
    assert err.startswith("watcher: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_subscription_from_add_to_redelivery(watcher: Watcher, registry: RegistryEnv, unique_repo: str) -> None:
    with SubscriptionReceiver() as receiver:
        hook = f"{receiver.url}/hook?token=abc"
        added = watcher.cli("subscription", "add", "hook", "--url", hook, "--repository", f"{unique_repo}*")
        assert added.exit_code == 0, added.output
        lines = added.stdout.splitlines()
        assert lines[0] == f"added subscription 'hook' (cloudevents, {receiver.url}/hook?…)"
        secret = lines[1].removeprefix("secret: ")
        assert lines[1].startswith("secret: whsec_") and "not shown again" in lines[2]

        # list and show never show the secret (nor the URL's query, where tokens live)
        listed = watcher.cli("subscription", "list")
        assert listed.stdout.splitlines()[0].split() == [
            "NAME",
            "FORMAT",
            "HOST",
            "STATE",
            "PENDING",
            "DEAD",
            "LAST",
            "ERROR",
        ]
        assert listed.stdout.splitlines()[1].split() == [
            "hook",
            "cloudevents",
            f"127.0.0.1:{receiver.port}",
            "ok",
            "0",
            "0",
        ]
        shown = json.loads(watcher.cli("subscription", "show", "hook", "--json").stdout)
        assert shown["url"] == f"{receiver.url}/hook?…" and shown["filters"] == {"repository": f"{unique_repo}*"}
        assert (shown["state"], shown["pending"], shown["dead"]) == ("ok", 0, 0)
        for command in (("list",), ("list", "--json"), ("show", "hook"), ("show", "hook", "--json")):
            out = watcher.cli("subscription", *command).output
            assert secret not in out and secret.removeprefix("whsec_") not in out and "abc" not in out

        # test: one sample event, signed, answered; not in the history
        tested = watcher.cli("subscription", "test", "hook")
        assert tested.exit_code == 0, tested.output
        assert (
            tested.stdout.startswith("subscription 'hook': the sample event test-")
            and "HTTP 200: thanks" in tested.stdout
        )
        (request,) = receiver.requests
        payload = Webhook(secret).verify(request.body, request.headers)  # the library's own check
        assert (
            request.headers["ce-id"].startswith("test-") and request.headers["webhook-id"] == request.headers["ce-id"]
        )
        assert payload["customData"]["change"] == "added"
        receiver.answer = (500, "down\r\nfor maintenance")
        err = one_line_failure(watcher.cli("subscription", "test", "hook"))
        assert "was not accepted: HTTP 500: down\\r\\nfor maintenance" in err
        assert watcher.cli("events").stdout == ""

        # deliveries written by the relay after a real poll
        registry.client.push_image(unique_repo, "v1")
        registry.client.push_image(unique_repo, "v2")
        assert watcher.add_registry("r1", registry.url, "--repository", unique_repo, "--emit-existing").exit_code == 0
        assert watcher.cli("poll", "r1").exit_code == 0
        # now the sample is one of the workspace's own tags; still never in the history or the deliveries
        receiver.answer = (202, "")
        assert watcher.cli("subscription", "test", "hook").stdout.endswith("was accepted: HTTP 202\n")
        sample = Webhook(secret).verify(receiver.requests[-1].body, receiver.requests[-1].headers)["customData"]
        assert (sample["registry"], sample["repository"]) == ("r1", unique_repo) and sample["tag"] in ("v1", "v2")
        assert len(watcher.cli("events").stdout.splitlines()) == 2
    rows = json_lines(watcher.cli("subscription", "deliveries", "hook", "--json").stdout)
    assert [(d["state"], d["event"]["tag"], d["event"]["change"]) for d in rows] == [
        ("pending", "v2", "added"),
        ("pending", "v1", "added"),
    ]  # newest first
    first, second = rows[1]["id"], rows[0]["id"]
    written_long_ago = schema.utcnow() - timedelta(days=2)
    with session_scope() as session:  # what the delivery worker does when it gives up on the first
        session.execute(
            update(schema.deliveries)
            .where(schema.deliveries.c.id == first)
            .values(
                state="dead",
                attempts=20,
                last_status=410,
                last_error=DEAD_ERROR,
                finished_at=schema.utcnow(),
                created_at=written_long_ago,
            )
        )
    listing = watcher.cli("subscription", "list").stdout.splitlines()[1].split()
    assert listing[3:6] == ["failing", "1", "1"]
    assert "\nfailing subscriptions: hook (see `watcher subscription show NAME`)\n" in watcher.cli("status").stdout
    dead = watcher.cli("subscription", "deliveries", "hook", "--state", "dead").stdout.splitlines()
    assert dead[0].split() == ["ID", "STATE", "ATTEMPTS", "STATUS", "CHANGE", "EVENT", "LAST", "ERROR"]
    assert dead[1].split()[:6] == [str(first), "dead", "20", "410", "added", "r1"] and len(dead) == 2

    err = one_line_failure(watcher.cli("subscription", "redeliver", "hook", str(second), "999999"))
    assert f"not a dead letter of subscription 'hook': {second}, 999999 (see" in err
    redone = watcher.cli("subscription", "redeliver", "hook", str(first))
    assert redone.stdout == "subscription 'hook': 1 dead letter pending again\n"
    with session_scope() as session:
        row = session.execute(select(schema.deliveries).where(schema.deliveries.c.id == first)).one()
    assert (row.state, row.attempts, row.finished_at) == ("pending", 0, None)  # same id: its place in the order
    assert row.created_at > written_long_ago  # a new 24 hours to be accepted in, not dead again at its first retry
    assert watcher.cli("subscription", "redeliver", "hook", "--all").stdout.endswith("0 dead letters pending again\n")

    # another workspace sees none of it
    with session_scope() as session:
        workspaces.create(session, "team-b")
    assert watcher.cli("subscription", "list", "--workspace", "team-b").stdout.startswith("no subscriptions")
    err = one_line_failure(watcher.cli("subscription", "deliveries", "hook", "--workspace", "team-b"))
    assert err == "watcher: no subscription named 'hook': see `watcher subscription list`\n"

    assert watcher.cli("subscription", "rm", "hook").stdout == "removed subscription 'hook'\n"
    assert watcher.cli("subscription", "list").stdout.startswith("no subscriptions")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_bad_input_is_one_line(watcher: Watcher, tmp_path: object) -> None:
    url = "http://127.0.0.1:9/x"
    assert watcher.cli("subscription", "add", "a", "--url", url).exit_code == 0
    for args, message in [
        (("add", "a", "--url", url), "subscription 'a' exists"),
        (("add", "Bad", "--url", url), "subscription name 'Bad' is not valid"),
        (("add", "b", "--url", "ftp://h/x"), "--url must be http or https"),
        (("add", "b", "--url", url, "--change", "moved"), "--change 'moved' is not one of"),
        (("add", "b", "--url", url, "--secret", "short"), "--secret must be whsec_"),
        (
            ("add", "b", "--url", "https://api.github.com/repos/o/r/dispatches", "--format", "github-dispatch"),
            "needs --secret",
        ),
        (("add", "b", "--url", "http://169.254.169.254/x"), "refused by the network policy"),
        (("add", "b", "--url", url, "--secret", "@/nonexistent/secret"), "--secret: cannot read"),
        (("show", "nothere"), "no subscription named 'nothere'"),
        (("rm", "nothere"), "no subscription named 'nothere'"),
        (("test", "nothere"), "no subscription named 'nothere'"),
    ]:
        assert message in one_line_failure(watcher.cli("subscription", *args)), args
    for args in (("redeliver", "a"), ("redeliver", "a", "--all", "1"), ("add", "b", "--url", url, "--format", "xml")):
        one_line_failure(watcher.cli("subscription", *args), exit_code=2)

    # a secret from standard input is stored, and not printed back
    given = "whsec_" + "A" * 44
    added = watcher.cli("subscription", "add", "c", "--url", url, "--secret", "-", input=given + "\n")
    assert added.stdout == "added subscription 'c' (cloudevents, http://127.0.0.1:9/x)\n"
    with session_scope() as session:
        from watcher.delivery.subscriptions import secret_of

        row = session.execute(select(schema.subscriptions).where(schema.subscriptions.c.name == "c")).one()
        assert secret_of(row) == given
