"""FAKE Slack, Teams and GitHub endpoints for deliveries: none of these services can run here.

Each records every request (`requests`: method, path, headers, body) and checks it against the shape the
service's documentation gives, answering as the service does:

* `SlackWebhook` — an incoming webhook (`POST /services/T…/B…/…`): a JSON object with a `text` and/or
  Block Kit `blocks` (at most 50; a `header` has a `plain_text` of at most 150 characters; a `section` has a
  `text` of at most 3000 or at most 10 `fields` of at most 2000; a text object is `plain_text` or `mrkdwn`).
  Accepted: 200 `ok` (text/html). A body that is not such JSON, or a block that is not such a block: 400
  `invalid_payload`; neither text nor blocks: 400 `no_text`; another path: 404 `no_service`.
* `TeamsWorkflow` — a Workflows "When a Teams webhook request is received" trigger URL: a `message` whose
  `attachments` are Adaptive Cards (`contentType` `application/vnd.microsoft.card.adaptive`, `content` an
  `AdaptiveCard` with `$schema`, `version`, a `body` of `TextBlock`/`FactSet` elements and `Action.OpenUrl`
  actions on https URLs). Accepted: 202, empty. Else 400 with a Logic Apps error object. STRICTER than the
  service: a trigger answers 202 to any JSON and the flow's "Post card" step fails later, out of sight; the
  fake refuses at once what that step would refuse.
* `GitHubApi` — `POST /repos/{owner}/{repo}/dispatches` (REST API 2022-11-28): `Authorization: Bearer`
  one of `tokens` (else 401 `Bad credentials`), a `User-Agent` (else 403), JSON with `event_type` of 1 to
  100 characters and `client_payload` an object of at most 10 top-level properties (else 422 `Invalid
  request.`); a repository it does not hold: 404 `Not Found`. Accepted: 204, empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.support.servers import BackgroundServer, QuietHandler

SLACK_PATH = re.compile(r"/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+")
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
GITHUB_DOCS = "https://docs.github.com/rest/repos/repos#create-a-repository-dispatch-event"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Refused(Exception):
    """What the service would answer instead: its status and body."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(status)
        self.status, self.body, self.content_type = status, body, content_type


class RecordingServer(BackgroundServer):
    """Records each request, then answers what `answer` says (or what it raised as `Refused`)."""

    def __init__(self, *, name: str) -> None:
        self.requests: list[Request] = []
        super().__init__(_RecordingHandler, name=name)

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        raise NotImplementedError


class _RecordingHandler(QuietHandler):
    def do_POST(self) -> None:
        server: RecordingServer = self.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(self.command, urlsplit(self.path).path, {k.lower(): v for k, v in self.headers.items()}, body)
        server.requests.append(request)
        try:
            status, answer, content_type = server.answer(request)
        except Refused as refused:
            status, answer, content_type = refused.status, refused.body, refused.content_type
        self.send_response(status)
        if answer:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PUT = do_POST


def _json_object(request: Request, refused: Refused) -> dict[str, Any]:
    try:
        document = request.json()
    except ValueError:
        raise refused from None
    if not isinstance(document, dict):
        raise refused
    return document


# Slack


class SlackWebhook(RecordingServer):
    path = "/services/T0WATCHER/B0WATCHER/fakefakefakefakefakefake"

    def __init__(self) -> None:
        super().__init__(name="fake-slack")

    @property
    def hook_url(self) -> str:
        return self.url + self.path

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        text = "text/html"
        if request.method != "POST" or not SLACK_PATH.fullmatch(request.path) or request.path != self.path:
            raise Refused(404, b"no_service", text)
        invalid = Refused(400, b"invalid_payload", text)
        message = _json_object(request, invalid)
        if not message.get("text") and not message.get("blocks"):
            raise Refused(400, b"no_text", text)
        if "text" in message and not isinstance(message["text"], str):
            raise invalid
        blocks = message.get("blocks", [])
        if not isinstance(blocks, list) or len(blocks) > 50 or not all(_slack_block(b) for b in blocks):
            raise invalid
        return 200, b"ok", text


def _slack_text(obj: object, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")) -> bool:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return False
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return False
    allowed = {"type", "text", "emoji"} if obj["type"] == "plain_text" else {"type", "text", "verbatim"}
    return obj.keys() <= allowed


def _slack_block(block: object) -> bool:
    if not isinstance(block, dict):
        return False
    if block.get("type") == "header":
        return block.keys() <= {"type", "text", "block_id"} and _slack_text(block.get("text"), 150, ("plain_text",))
    if block.get("type") == "section":
        if not block.keys() <= {"type", "text", "fields", "block_id", "accessory"}:
            return False
        fields = block.get("fields")
        if "text" not in block and fields is None:
            return False
        if "text" in block and not _slack_text(block["text"], 3000):
            return False
        return fields is None or (
            isinstance(fields, list) and 1 <= len(fields) <= 10 and all(_slack_text(f, 2000) for f in fields)
        )
    if block.get("type") == "context":
        elements = block.get("elements")
        return isinstance(elements, list) and 1 <= len(elements) <= 10 and all(_slack_text(e, 3000) for e in elements)
    return block.get("type") == "divider"


# Teams


class TeamsWorkflow(RecordingServer):
    #: a Workflows trigger URL's shape (Power Automate: `/workflows/{id}/triggers/manual/paths/invoke`)
    path = "/workflows/0f0f0f0f0f0f/triggers/manual/paths/invoke"

    def __init__(self) -> None:
        super().__init__(name="fake-teams")

    @property
    def hook_url(self) -> str:
        return self.url + self.path + "?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=fake"

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        if request.method != "POST" or request.path != self.path:
            raise _logic_apps_error(404, "TriggerNotFound", "the workflow trigger does not exist")
        message = _json_object(request, _logic_apps_error(400, "InvalidRequestContent", "the body is not JSON"))
        attachments = message.get("attachments")
        if message.get("type") != "message" or not isinstance(attachments, list) or not attachments:
            raise _logic_apps_error(400, "TriggerInputSchemaMismatch", "a message with attachments is expected")
        for attachment in attachments:
            problem = _adaptive_card_problem(attachment)
            if problem:
                raise _logic_apps_error(400, "InvalidTemplate", problem)
        return 202, b"", ""


def _logic_apps_error(status: int, code: str, message: str) -> Refused:
    return Refused(status, json.dumps({"error": {"code": code, "message": message}}).encode())


def _adaptive_card_problem(attachment: object) -> str:
    """What is wrong with the attachment as an Adaptive Card the flow can post; "" when nothing."""
    if not isinstance(attachment, dict) or attachment.get("contentType") != ADAPTIVE_CARD:
        return f"an attachment's contentType is not {ADAPTIVE_CARD}"
    if attachment.get("contentUrl", None) is not None:
        return "an Adaptive Card attachment has no contentUrl"
    card = attachment.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard" or not isinstance(card.get("version"), str):
        return "the content is not an AdaptiveCard with a version"
    if card.get("$schema") != "http://adaptivecards.io/schemas/adaptive-card.json":
        return "the card has no Adaptive Card $schema"
    body = card.get("body")
    if not isinstance(body, list) or not body:
        return "the card has no body"
    for element in body:
        if not isinstance(element, dict):
            return "a body element is not an object"
        if element.get("type") == "TextBlock":
            if not isinstance(element.get("text"), str) or not element["text"]:
                return "a TextBlock has no text"
        elif element.get("type") == "FactSet":
            facts = element.get("facts")
            if not isinstance(facts, list) or not all(
                isinstance(f, dict) and f.keys() == {"title", "value"} and all(isinstance(v, str) for v in f.values())
                for f in facts
            ):
                return "a FactSet's facts are not {title, value} strings"
        else:
            return f"an element of type {element.get('type')!r} is not expected"
    for action in card.get("actions", []):
        if not isinstance(action, dict) or action.get("type") != "Action.OpenUrl":
            return "an action is not Action.OpenUrl"
        if not isinstance(action.get("url"), str) or urlsplit(action["url"]).scheme != "https":
            return "an Action.OpenUrl has no https url"
        if not isinstance(action.get("title"), str):
            return "an Action.OpenUrl has no title"
    return ""


# GitHub


class GitHubApi(RecordingServer):
    def __init__(self, tokens: set[str], repositories: set[str]) -> None:
        self.tokens = tokens
        self.repositories = repositories  # "owner/repo"
        super().__init__(name="fake-github")

    def dispatches_url(self, repository: str) -> str:
        return f"{self.url}/repos/{repository}/dispatches"

    def answer(self, request: Request) -> tuple[int, bytes, str]:
        if not request.headers.get("user-agent"):
            raise _github_error(
                403, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in self.tokens:
            raise _github_error(401, "Bad credentials")
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)/dispatches", request.path)
        if request.method != "POST" or match is None or match[1] not in self.repositories:
            raise _github_error(404, "Not Found")
        invalid = _github_error(422, "Invalid request.\n\nFor 'links/0/schema', the body is not a JSON object.")
        document = _json_object(request, invalid)
        event_type = document.get("event_type")
        if not isinstance(event_type, str) or not 1 <= len(event_type) <= 100:
            raise _github_error(422, "Invalid request.\n\nevent_type must be a string of 1 to 100 characters.")
        payload = document.get("client_payload", {})
        if not isinstance(payload, dict) or len(payload) > 10:
            raise _github_error(422, "Invalid request.\n\nclient_payload has more than 10 top-level properties.")
        return 204, b"", ""


def _github_error(status: int, message: str) -> Refused:
    body = {"message": message, "documentation_url": GITHUB_DOCS, "status": str(status)}
    return Refused(status, json.dumps(body).encode())
