"""What a delivery sends, in each format's real wire shape: one HTTP request per event.

- `cloudevents`: the CloudEvent already on the stream in HTTP binary mode: its attributes as `ce-*`
  headers, its `data` (the CDEvent) as the JSON body;
- `cloudevents-structured`: the same CloudEvent whole, `application/cloudevents+json`;
- `slack`, `teams`, `github-dispatch`: see their builders (`BUILDERS`).

Every request but GitHub's is signed per Standard Webhooks (`watcher.delivery.signing`) with the
subscription's secret; GitHub authorizes with the secret as a bearer token and gets the signature headers
too (harmless, and a proxy in front of GitHub can check them). The message id is the event's id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watcher.delivery import signing

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
        headers |= {"authorization": f"Bearer {secret}", "accept": "application/vnd.github+json"}
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


#: format -> (content type, body, extra headers) of its request
BUILDERS: dict[str, Callable[[dict[str, Any], Any], Built]] = {
    "cloudevents": _binary,
    "cloudevents-structured": _structured,
}
