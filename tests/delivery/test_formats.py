"""Every format's request as its receiver reads it: the events of a real push, update and delete against the
real registry, and a real policy selection, built and sent with the delivery client to a receiver built on
the official CloudEvents SDK and the `standardwebhooks` library (which must verify each, and refuse a
tampered or replayed one), and to Slack, Teams and GitHub fakes that check the shapes their documentation
gives; a registry's hostile values are shown, never interpreted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from cloudevents.conversion import to_dict
from cloudevents.http import from_http
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import Watcher
from tests.fakes.chat_endpoints import GitHubApi, SlackWebhook, TeamsWorkflow
from tests.support.cdevents import validate_cloudevent
from tests.support.fixtures import RegistryEnv
from tests.support.servers import BackgroundServer, QuietHandler
from watcher.db import session_scope
from watcher.delivery import sending
from watcher.delivery.formats import Outgoing, build
from watcher.delivery.subscriptions import new_secret
from watcher.diff import Change, ChangeKind
from watcher.models import Event
from watcher.outbox.events import fields_of, new_event
from watcher.policies.store import PolicySpec, save
from watcher.schema import DEFAULT_WORKSPACE_ID

EVENT_ATTRIBUTES = ["event_id", "change", "workspace", "registry_name", "repository", "tag", "digest"]
EVENT_ATTRIBUTES += ["previous_digest", "pushed_at", "detected_at", "policy", "previous_tag", "cloudevent"]


class Receiver(BackgroundServer):
    """A subscriber's endpoint: verifies each request with `standardwebhooks`, parses it with the CloudEvents
    SDK, keeps what it read (or why it refused), and answers 204 (or 401)."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.refused: list[str] = []
        super().__init__(_ReceiverHandler, name="receiver")


class _ReceiverHandler(QuietHandler):
    def do_POST(self) -> None:
        server: Receiver = self.owner
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            server.webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            server.refused.append(str(exc))
            self.send_response(401)
        else:
            server.received.append((headers, to_dict(from_http(headers, body))))
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    secret = new_secret()
    server = Receiver(secret)
    yield server, secret
    server.close()


@pytest.fixture
def fakes() -> Iterator[tuple[SlackWebhook, TeamsWorkflow, GitHubApi]]:
    services = (SlackWebhook(), TeamsWorkflow(), GitHubApi({"ghp_fake-token"}, {"acme/deploy"}))
    yield services
    for service in services:
        service.close()


def send_all(requests: list[Outgoing]) -> list[sending.Outcome]:
    """Each request sent in order by the delivery client."""

    async def run() -> list[sending.Outcome]:
        async with sending.client() as http:
            return [await sending.send(http, request) for request in requests]

    return asyncio.run(run())


def history(watcher: Watcher) -> list[Any]:
    """The events of the history, oldest first, as plain rows (what the delivery worker reads)."""
    with session_scope(watcher.engine) as session:
        rows = session.scalars(select(Event).order_by(Event.id)).all()
        return [SimpleNamespace(**{key: getattr(row, key) for key in EVENT_ATTRIBUTES}) for row in rows]


def real_events(watcher: Watcher, registry: RegistryEnv, repo: str) -> list[Any]:
    """A policy's first selection, then a push, an update and a delete, each polled, with the selections
    they cause."""
    registry.client.push_image(repo, "1.0.0")
    assert watcher.add_registry("r1", registry.url, "--repository", repo).exit_code == 0
    assert watcher.cli("poll", "r1").exit_code == 0
    with session_scope(watcher.engine) as session:
        save(session, PolicySpec.build("app", "r1", repo, semver="*"), workspace_id=DEFAULT_WORKSPACE_ID)
    registry.client.push_image(repo, "1.0.1")
    registry.client.push_image(repo, "1.0.0")  # a new image: the tag moves
    assert watcher.cli("poll", "r1").exit_code == 0
    registry.client.delete(repo, "1.0.1")
    assert watcher.cli("poll", "r1").exit_code == 0
    events = history(watcher)
    assert [(e.change, e.tag) for e in events] == [
        ("selected", "1.0.0"),
        ("updated", "1.0.0"),  # a poll's changes in tag order
        ("added", "1.0.1"),
        ("selected", "1.0.1"),
        ("removed", "1.0.1"),
        ("selected", "1.0.0"),
    ]
    return events


def test_every_real_event_arrives_parses_and_verifies_in_both_cloudevents_modes_and_in_each_chat_shape(
    watcher: Watcher,
    registry: RegistryEnv,
    unique_repo: str,
    receiver: tuple[Receiver, str],
    fakes: tuple[SlackWebhook, TeamsWorkflow, GitHubApi],
) -> None:
    server, secret = receiver
    events = real_events(watcher, registry, unique_repo)
    hook = f"{server.url}/hooks/watcher"
    requests = [build(mode, hook, secret, e) for e in events for mode in ("cloudevents", "cloudevents-structured")]
    assert {o.kind for o in send_all(requests)} == {"delivered"}
    assert server.refused == []
    assert len(server.received) == 2 * len(events)
    for index, (headers, cloudevent) in enumerate(server.received):
        event = events[index // 2]
        stored = json.loads(event.cloudevent)
        assert cloudevent == stored  # the CloudEvent on the stream, exactly, in either mode
        assert (cloudevent["id"], headers["webhook-id"]) == (event.event_id, event.event_id)
        assert cloudevent["source"] == "/watcher/workspaces/default/registries/r1"
        validate_cloudevent(cloudevent)
        binary = index % 2 == 0
        assert headers["content-type"].startswith("application/json" if binary else "application/cloudevents+json")
        assert ("ce-id" in headers) is binary
    assert {c["type"] for _, c in server.received} == {
        "dev.cdevents.artifact.published.0.3.0",
        "dev.cdevents.artifact.deleted.0.2.0",
        "dev.cdeventsx.watcher-policy.selected.0.1.0",
    }

    # the check is real: a changed body, or a request signed 10 minutes ago (a replay), is refused
    signed = build("cloudevents", hook, secret, events[2])
    tampered = dataclasses.replace(signed, body=signed.body.replace(b"1.0.1", b"6.6.6"))
    replayed = build("cloudevents-structured", hook, secret, events[2], now=time.time() - 600)
    other_key = build("cloudevents", hook, new_secret(), events[2])
    outcomes = send_all([tampered, replayed, other_key])
    assert [(o.kind, o.status) for o in outcomes] == [("permanent", 401)] * 3
    assert server.refused == ["No matching signature found", "Message timestamp too old", "No matching signature found"]

    slack, teams, github = fakes
    token = "ghp_fake-token"
    chats = [
        build(fmt, url, token if fmt == "github-dispatch" else secret, e)
        for e in events
        for fmt, url in [
            ("slack", slack.hook_url),
            ("teams", teams.hook_url),
            ("github-dispatch", github.dispatches_url("acme/deploy")),
        ]
    ]
    assert [(o.kind, o.status) for o in send_all(chats)] == [
        ("delivered", 200),
        ("delivered", 202),
        ("delivered", 204),
    ] * 6
    host = registry.host
    updated, added, selected = events[1], events[2], events[3]
    short = added.digest[:19]  # sha256: and 12 hex digits

    messages = [r.json() for r in slack.requests]
    assert [m["text"] for m in messages] == [
        f"policy app selected {unique_repo}:1.0.0",
        f"updated r1/{unique_repo}:1.0.0",
        f"added r1/{unique_repo}:1.0.1",
        f"policy app selected {unique_repo}:1.0.1",
        f"removed r1/{unique_repo}:1.0.1",
        f"policy app selected {unique_repo}:1.0.0",
    ]
    fields = [f["text"] for f in messages[2]["blocks"][1]["fields"]]
    assert fields[:4] == ["*Registry*\nr1", f"*Image*\n{unique_repo}:1.0.1", "*Change*\nadded", f"*Digest*\n{short}"]
    assert f"*Previous digest*\n{updated.previous_digest[:19]}" in [
        f["text"] for f in messages[1]["blocks"][1]["fields"]
    ]
    assert [f["text"] for f in messages[3]["blocks"][1]["fields"]][:4] == [
        "*Policy*\napp",
        "*Registry*\nr1",
        f"*Selected*\n{host}/{unique_repo}:1.0.1@{selected.digest}",
        "*Previous tag*\n1.0.0",
    ]
    assert all(r.headers["webhook-id"] == e.event_id for r, e in zip(slack.requests, events, strict=True))

    cards = [r.json()["attachments"][0]["content"] for r in teams.requests]
    assert cards[2]["body"][0]["text"] == f"Added: {unique_repo}:1.0.1".replace("_", "\\_")
    facts = {f["title"]: f["value"] for f in cards[3]["body"][1]["facts"]}
    assert (facts["Policy"], facts["Previous tag"]) == ("app", "1.0.0")
    assert facts["Selected"].replace("\\", "") == f"{host}/{unique_repo}:1.0.1@{selected.digest}"
    assert all(card["actions"] == [] for card in cards)  # no source annotation: no link

    dispatch = github.requests[2]
    assert dispatch.path == "/repos/acme/deploy/dispatches"
    assert dispatch.headers["authorization"] == f"Bearer {token}"
    assert dispatch.headers["accept"] == "application/vnd.github+json"
    assert dispatch.headers["x-github-api-version"] == "2022-11-28"
    assert "webhook-signature" not in dispatch.headers  # GitHub authorizes the token; no secret to sign with
    document = dispatch.json()
    assert document["event_type"] == "watcher.added"
    assert document["client_payload"] == {"event": fields_of(added), "cloudevent": json.loads(added.cloudevent)}
    assert [r.json()["event_type"] for r in github.requests] == [f"watcher.{e.change}" for e in events]
    assert github.requests[3].json()["client_payload"]["event"]["previous_tag"] == "1.0.0"

    # and the fakes refuse what their services refuse
    refused = send_all(
        [
            dataclasses.replace(chats[0], body=b'{"text": "x", "blocks": [{"type": "header"}]}'),
            dataclasses.replace(chats[1], body=b'{"type": "message", "attachments": [{"contentType": "text/html"}]}'),
            dataclasses.replace(chats[2], headers=chats[2].headers | {"authorization": "Bearer wrong"}),
            dataclasses.replace(chats[2], body=json.dumps({"event_type": "x" * 101}).encode()),
            dataclasses.replace(
                chats[2],
                body=json.dumps({"event_type": "x", "client_payload": dict.fromkeys("abcdefghijk", 1)}).encode(),
            ),
        ]
    )
    assert [(o.kind, o.status, o.excerpt[:30]) for o in refused] == [
        ("permanent", 400, "invalid_payload"),
        ("permanent", 400, '{"error": {"code": "InvalidTem'),
        ("permanent", 401, '{"message": "Bad credentials",'),
        ("permanent", 422, '{"message": "Invalid request.\\'),
        ("permanent", 422, '{"message": "Invalid request.\\'),
    ]


HOSTILE = (
    "<https://evil.example|click> <!channel>\n> quoted\n @channel @here & <b>bold</b> [x](https://evil.example) *y*"
)


def hostile_event(source: str) -> Any:
    """A tag event whose tag, revision and source annotation a hostile registry chose."""
    change = Change(ChangeKind.ADDED, "team/app", "v1", "sha256:" + "ab" * 32)
    event = new_event(1, "r1", "https://registry.example", change, datetime.now(UTC))
    cloudevent = json.loads(event.cloudevent)
    custom = cloudevent["data"]["customData"]
    custom |= {"tag": HOSTILE, "revision": HOSTILE, "source": source, "created": "2026-01-02T03:04:05Z"}
    custom["platforms"] = ["linux/amd64", "linux/arm64/v8"]
    event.cloudevent = json.dumps(cloudevent)
    return event


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_a_registrys_hostile_tag_and_annotations_are_shown_never_linked_or_mentioned(
    fakes: tuple[SlackWebhook, TeamsWorkflow, GitHubApi],
) -> None:
    slack, teams, _ = fakes
    secret = new_secret()
    linked, unlinkable = hostile_event("https://github.com/acme/app?a=1&b=2"), hostile_event(HOSTILE)
    requests = [
        build(fmt, url, secret, e)
        for e in (linked, unlinkable)
        for fmt, url in [("slack", slack.hook_url), ("teams", teams.hook_url)]
    ]
    assert [o.status for o in send_all(requests)] == [200, 202, 200, 202]

    for request in slack.requests:
        message = request.json()
        texts = list(strings(message))
        assert not any(c in text for text in texts for c in "<>" if "<https://github.com/acme/app" not in text)
        assert not any("@channel" in text or "@here" in text for text in texts)  # a word joiner after the @
        assert (
            "&lt;https://evil.example|click&gt; &lt;!channel&gt; &gt; quoted  @\u2060channel"
            in message["blocks"][1]["fields"][1]["text"]
        )
        assert all(f.get("verbatim") is True and f["text"].count("\n") == 1 for f in message["blocks"][1]["fields"])
        assert "*Platforms*\nlinux/amd64, linux/arm64/v8" in [f["text"] for f in message["blocks"][1]["fields"]]
    linked_blocks = slack.requests[0].json()["blocks"]
    assert (
        linked_blocks[2]["text"]["text"]
        == "*Source*\n<https://github.com/acme/app?a=1&amp;b=2|https://github.com/acme/app?a=1&amp;b=2>"
    )
    assert len(slack.requests[1].json()["blocks"]) == 2  # not an https URL: shown as a fact, not linked
    unlinked = [f["text"] for f in slack.requests[1].json()["blocks"][1]["fields"]]
    assert any(text.startswith("*Source*\n&lt;https://evil.example|click&gt;") for text in unlinked)

    for request in teams.requests:
        card = request.json()["attachments"][0]["content"]
        for text in strings(card["body"]):
            assert "](" not in text.replace("\\](", "") and "<b>" not in text  # no Markdown link, no HTML
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert not any("\n" in value for value in facts.values())  # no value starts a line of its own
        assert facts["Image"].startswith(r"team/app:\<https://evil.example|click\> \<!channel\>")
        assert r"\[x\]\(https://evil.example\) \*y\*" in facts["Revision"]
    assert teams.requests[0].json()["attachments"][0]["content"]["actions"] == [
        {"type": "Action.OpenUrl", "title": "Source", "url": "https://github.com/acme/app?a=1&b=2"}
    ]
    assert teams.requests[1].json()["attachments"][0]["content"]["actions"] == []
