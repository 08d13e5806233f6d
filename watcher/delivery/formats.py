"""What a delivery sends, in each format's real wire shape: one HTTP request per event.

- `cloudevents`: the CloudEvent already on the stream in HTTP binary mode: its attributes as `ce-*`
  headers, its `data` (the CDEvent) as the JSON body;
- `cloudevents-structured`: the same CloudEvent whole, `application/cloudevents+json`;
- `slack`: an incoming-webhook message: a one-line `text` (the notification) and Block Kit `blocks`;
- `teams`: a Teams Workflows ("When a Teams webhook request is received") message carrying an Adaptive Card;
- `github-dispatch`: a `repository_dispatch` event (`event_type` `watcher.<change>`, the event in
  `client_payload`) for the REST API.

Every request but GitHub's is signed per Standard Webhooks (`watcher.delivery.signing`) with the
subscription's secret, the message id being the event's id; GitHub authorizes the subscription's secret
(a token) as a bearer token instead. Building is pure: no I/O, the same event gives the same body.

A chat message shows values a registry chose (a tag, an image's `source` annotation): they are shown,
never interpreted, so no registry can post a link or a mention in someone's channel.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from watcher.delivery import signing
from watcher.outbox.events import SELECTED, fields_of

USER_AGENT = "watcher-delivery/1"
#: the CloudEvents attributes that become `ce-*` headers in binary mode (everything but `data` and the
#: content type, which is `Content-Type`)
_NOT_HEADERS = {"data", "datacontenttype"}


@dataclass(frozen=True)
class Outgoing:
    """One request to send."""

    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


def build(format: str, url: str, secret: str, event: Any, *, now: float | None = None) -> Outgoing:
    """The request delivering `event` (an Event, or a read-model row of one) to a subscription."""
    cloudevent = json.loads(event.cloudevent)
    content_type, body, extra = BUILDERS[format](cloudevent, event)
    timestamp = int(time.time() if now is None else now)
    headers = {"content-type": content_type, "user-agent": USER_AGENT, **extra}
    if format == "github-dispatch":
        headers |= {"authorization": f"Bearer {secret}"}
    else:
        headers |= signing.headers(secret, event.event_id, timestamp, body)
    return Outgoing(url, headers, body)


Built = tuple[str, bytes, dict[str, str]]


def _binary(cloudevent: dict[str, Any], event: Any) -> Built:
    headers = {f"ce-{key}": str(value) for key, value in cloudevent.items() if key not in _NOT_HEADERS}
    return cloudevent.get("datacontenttype", "application/json"), _json(cloudevent["data"]), headers


def _structured(cloudevent: dict[str, Any], event: Any) -> Built:
    return "application/cloudevents+json; charset=utf-8", _json(cloudevent), {}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# What a chat message says of an event, whichever the chat.

#: at most this many characters of one value a registry chose are shown (the rest is cut, with "…")
MAX_VALUE = 300
#: Slack's limits: a header's plain text, a section's fields
SLACK_HEADER = 150
SLACK_FIELDS = 10


@dataclass(frozen=True)
class Summary:
    """An event as a person reads it: one line, a title, labelled facts, and the image's source as a link
    when it is an https URL (else it is one of the facts, as text)."""

    line: str
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    link: str = ""


def summary(cloudevent: dict[str, Any]) -> Summary:
    """What the CloudEvent says: its CDEvent's `customData` (the stream fields, and for a tag event what is
    known of the image: `created`, `platforms`, `source`, `revision`, each optional)."""
    cdevent = cloudevent.get("data") or {}
    custom = cdevent.get("customData") or {}
    text = {key: _capped(str(value)) for key, value in custom.items() if isinstance(value, str)}
    registry, repository, tag, change = (text.get(k, "") for k in ("registry", "repository", "tag", "change"))
    if change == SELECTED:
        return _selection_summary(cdevent, text)
    image = f"{repository}:{tag}"
    facts = [("Registry", registry), ("Image", image), ("Change", change), ("Digest", short_digest(text.get("digest")))]
    if change == "updated" and text.get("previous_digest"):
        facts.append(("Previous digest", short_digest(text["previous_digest"])))
    if text.get("created"):
        facts.append(("Created", text["created"]))
    platforms = custom.get("platforms")
    if isinstance(platforms, list) and platforms:
        facts.append(("Platforms", _capped(", ".join(str(p) for p in platforms))))
    if text.get("revision"):
        facts.append(("Revision", text["revision"]))
    source = text.get("source", "")
    link = https_url(str(custom.get("source") or ""))
    if source and not link:
        facts.append(("Source", source))
    return Summary(f"{change} {registry}/{image}", f"{change.capitalize()}: {image}", facts, link)


def _selection_summary(cdevent: dict[str, Any], text: dict[str, str]) -> Summary:
    """A policy's selection: what it selects now (its pull reference) and the tag it selected before."""
    content = (cdevent.get("subject") or {}).get("content") or {}
    policy, registry, repository, tag = (text.get(k, "") for k in ("policy", "registry", "repository", "tag"))
    reference = _capped(str(content.get("pullReference") or "")) or (f"{repository}:{tag}" if tag else "")
    facts = [("Policy", policy), ("Registry", registry), ("Selected", reference or "nothing")]
    facts.append(("Previous tag", text.get("previous_tag") or "none"))
    if tag:
        facts.append(("Digest", short_digest(text.get("digest"))))
        line = f"policy {policy} selected {repository}:{tag}"
    else:
        line = f"policy {policy} selects nothing in {repository}"
    return Summary(line, f"Policy {policy}: {f'{repository}:{tag}' if tag else 'nothing selected'}", facts)


def short_digest(digest: str | None) -> str:
    """`sha256:` and the first 12 hex digits, as `docker images` shows an id."""
    algorithm, _, hexdigits = (digest or "").partition(":")
    return f"{algorithm}:{hexdigits[:12]}" if hexdigits else (digest or "")


def https_url(value: str) -> str:
    """The value when it is a plain https URL that can be a link (printable ASCII, a host, nothing a chat's
    link syntax would read as its own); else ""."""
    if not value or len(value) > MAX_VALUE or not value.isascii() or not value.isprintable():
        return ""
    if any(c in value for c in ' "<>|\\`[]()'):
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    return value if parts.scheme == "https" and parts.hostname else ""


def _capped(value: str) -> str:
    """One line (a newline or other control character is a space: no value starts a line of its own) of at
    most `MAX_VALUE` characters."""
    value = "".join(c if c.isprintable() else " " for c in value)
    return value if len(value) <= MAX_VALUE else value[: MAX_VALUE - 1] + "…"


# Slack: https://api.slack.com/messaging/webhooks, Block Kit, and its text formatting's escaping.

_SLACK_MENTION = re.compile(r"@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)


def slack_escaped(value: str) -> str:
    """`&`, `<`, `>` as the entities Slack asks for (so no `<url|label>` link, `<!channel>` or `<@user>`
    mention can be formed), and a word joiner after the `@` of `@channel`, `@here` and `@everyone`."""
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SLACK_MENTION.sub("@\u2060", escaped)


def _slack_fitted(value: str, limit: int) -> str:
    """The value escaped, cut (before escaping, so no entity is cut) to at most `limit` characters."""
    escaped = slack_escaped(value)
    if len(escaped) <= limit:
        return escaped
    cut = min(len(value), limit - 1)
    while cut and len(slack_escaped(value[:cut])) > limit - 1:
        cut -= 1
    return slack_escaped(value[:cut]) + "…"


def _slack_mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object with `verbatim`: Slack links no bare URL or channel name in it by itself."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _slack(cloudevent: dict[str, Any], event: Any) -> Built:
    told = summary(cloudevent)
    title = _slack_fitted(told.title, SLACK_HEADER)  # plain text too: Slack reads `&<>` in every text object
    fields = [_slack_mrkdwn(f"*{label}*\n{slack_escaped(value)}") for label, value in told.facts]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": False}},
        {"type": "section", "fields": fields[:SLACK_FIELDS]},
    ]
    if told.link:
        shown = slack_escaped(told.link)
        blocks.append({"type": "section", "text": _slack_mrkdwn(f"*Source*\n<{shown}|{shown}>")})
    message = {"text": slack_escaped(told.line), "blocks": blocks}
    return "application/json", _json(message), {}


# Teams: a Workflows webhook ("When a Teams webhook request is received") posting an Adaptive Card 1.4.

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
#: what Adaptive Cards' Markdown subset reads as formatting or a link (`[label](url)`), escaped with `\`
_MARKDOWN = re.compile(r"([\\`*_~\[\]()<>#])")


def markdown_escaped(value: str) -> str:
    """The value with a backslash before each character Adaptive Cards' Markdown would interpret."""
    return _MARKDOWN.sub(r"\\\1", value)


def _teams(cloudevent: dict[str, Any], event: Any) -> Built:
    told = summary(cloudevent)
    facts = [{"title": label, "value": markdown_escaped(value)} for label, value in told.facts]
    card = {
        "$schema": ADAPTIVE_SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": markdown_escaped(told.title),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            {"type": "FactSet", "facts": facts},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "Source", "url": told.link}] if told.link else [],
    }
    message = {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}]}
    return "application/json", _json(message), {}


# GitHub: POST /repos/{owner}/{repo}/dispatches (REST API 2022-11-28), answered 204.

GITHUB_API_VERSION = "2022-11-28"
#: GitHub's limits: `event_type` length, `client_payload` top-level properties
MAX_EVENT_TYPE = 100
MAX_CLIENT_PAYLOAD_KEYS = 10


def _github(cloudevent: dict[str, Any], event: Any) -> Built:
    """`event_type` `watcher.<change>` (what `on: repository_dispatch: types:` filters on), and in
    `client_payload` the stream fields as `event` and the CloudEvent as `cloudevent` (2 of GitHub's 10
    top-level properties)."""
    payload = {
        "event_type": f"watcher.{event.change}"[:MAX_EVENT_TYPE],
        "client_payload": {"event": fields_of(event), "cloudevent": cloudevent},
    }
    headers = {"accept": "application/vnd.github+json", "x-github-api-version": GITHUB_API_VERSION}
    return "application/json", _json(payload), headers


#: format -> (content type, body, extra headers) of its request
BUILDERS: dict[str, Callable[[dict[str, Any], Any], Built]] = {
    "cloudevents": _binary,
    "cloudevents-structured": _structured,
    "slack": _slack,
    "teams": _teams,
    "github-dispatch": _github,
}
