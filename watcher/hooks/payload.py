"""Reading the JSON bodies that providers' webhooks send: one clear line (Malformed) for anything else.

Shared by every format that reads JSON (Harbor, Docker Hub, ACR, Quay, EventBridge, GitHub, Pub/Sub,
Distribution, CloudEvents): the content type, the body itself, a field's type, a repository name, and
whether a host a notification names is the registry's own.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from watcher.hooks.format import Malformed, Notification
from watcher.registry.reference import json_type, repository_problem, shown


def media_type(notification: Notification, default: str = "application/json") -> str:
    """The body's media type, lowercase, without parameters; `default` when the sender named none (some
    leave it out)."""
    return (notification.content_type or default).split(";", 1)[0].strip().lower()


def json_body(notification: Notification, what: str) -> Any:
    """The body as JSON of any type (a CloudEvents batch is an array); Malformed when it is not JSON."""
    try:
        return json.loads(notification.body)
    except (ValueError, RecursionError):
        raise Malformed(f"the body is not JSON, as {what} sends") from None


def json_object(notification: Notification, what: str) -> dict[str, Any]:
    """The body as a JSON object; Malformed when the content type is not JSON or the body is not an object.
    No content type at all is taken for JSON: some senders leave it out."""
    kind = media_type(notification)
    if kind != "application/json" and not kind.endswith("+json"):
        raise Malformed(f"the content type {shown(kind)} is not JSON, as {what} sends")
    body = json_body(notification, what)
    if not isinstance(body, dict):
        raise Malformed(f"the body is a JSON {json_type(body)}, not {what}'s JSON object")
    return body


def member(parent: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """`parent[key]`, which must be of JSON type `kind` (dict, list or str); Malformed otherwise."""
    value = parent.get(key)
    if not isinstance(value, kind):
        expected = {"dict": "an object", "list": "an array", "str": "a string"}[kind.__name__]
        got = "missing" if key not in parent else f"a JSON {json_type(value)}"
        raise Malformed(f'{where}"{key}" is {got}, not {expected}')
    return value


def text(parent: dict[str, Any], key: str, where: str) -> str:
    value: str = member(parent, key, str, where)
    return value


def repository(value: object, where: str) -> str:
    """A repository name as the watcher names it; Malformed when it is not a valid OCI name."""
    problem = repository_problem(value)
    if problem is not None or not isinstance(value, str):
        raise Malformed(f"{where}: the repository {shown(value)} is not a valid OCI name: it {problem}")
    return value


def hostname(value: str) -> str:
    """The host a `host[:port]` or URL names, lowercase, without port or trailing dot."""
    found = urlsplit(value if "://" in value else f"//{value}").hostname or ""
    return found.rstrip(".").lower()


def same_host(named: str, registry_url: str) -> bool:
    """Whether a host a notification names (`host[:port]`, or a reference starting with one) is the registry's."""
    return bool(named) and hostname(named.split("/", 1)[0]) == hostname(registry_url)
