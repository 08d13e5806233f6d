"""Any CloudEvent carrying a CDEvent about an OCI artifact of this registry, signed with
`X-Hub-Signature-256` (HMAC-SHA256 of the body under the secret).

Accepted encodings (CloudEvents' HTTP binding): structured mode (`application/cloudevents+json`, the
CloudEvent with the CDEvent as its `data`), batched mode (`application/cloudevents-batch+json`, an array of
those) and binary mode (`application/json`: the body is the CDEvent itself). In binary mode the `ce-*`
headers are not read: the signature covers only the body, and the CDEvent's own `context.type` says
everything they would.

`dev.cdevents.artifact.published`, `.packaged` and `.deleted` (any version) re-list the repository their
`subject.id` names: a purl `pkg:oci/NAME@DIGEST?repository_url=HOST/REPOSITORY` (the shape the watcher's own
events have), when HOST is the registry's own host. Every other CloudEvent, CDEvent or purl (another
registry, another package type, no `repository_url`) is acknowledged and ignored.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from watcher.hooks.format import Auth, HookFormat, Malformed, Notification
from watcher.hooks.payload import json_body, media_type, same_host
from watcher.hooks.payload import repository as valid_repository
from watcher.registry.reference import shown

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY = "application/json"
WHAT = "the CloudEvents HTTP binding"
RELISTING_TYPES = re.compile(r"^dev\.cdevents\.artifact\.(?:published|packaged|deleted)\.\d+\.\d+\.\d+(?:-[\w.]+)?$")


def repositories(notification: Notification) -> list[str]:
    """The repositories of this registry the body's artifact CDEvents name, each once, in order."""
    kind = media_type(notification, default="")  # no content type: no encoding to read it by
    body = json_body(notification, WHAT) if kind in (STRUCTURED, BATCH, BINARY) else None
    if kind == STRUCTURED:
        cdevents = [_cdevent(body, 0)]
    elif kind == BATCH:
        if not isinstance(body, list):
            raise Malformed("a CloudEvents batch is a JSON array")
        cdevents = [_cdevent(event, number) for number, event in enumerate(body)]
    elif kind == BINARY:
        cdevents = [body]
    else:
        raise Malformed(f"the content type {shown(kind)} is not a CloudEvents HTTP encoding")
    wanted: dict[str, None] = {}
    for number, cdevent in enumerate(cdevents):
        repository = _relisted(cdevent, notification.registry_url, number) if cdevent is not None else None
        if repository is not None:
            wanted[repository] = None
    return list(wanted)


def _cdevent(event: Any, number: int) -> Any:
    """A structured CloudEvent's CDEvent (its `data`), or None for a CloudEvent that is not a CDEvent."""
    kind = event.get("type") if isinstance(event, dict) else None
    if not isinstance(kind, str):
        raise Malformed(f"event {number} is not a CloudEvent (no type)")
    if not kind.startswith("dev.cdevents."):
        return None
    return event.get("data")


def _relisted(cdevent: Any, registry_url: str, number: int) -> str | None:
    """The repository an artifact CDEvent names on this registry's host; None for anything else."""
    context = cdevent.get("context") if isinstance(cdevent, dict) else None
    subject = cdevent.get("subject") if isinstance(cdevent, dict) else None
    kind = context.get("type") if isinstance(context, dict) else None
    if not isinstance(subject, dict) or not isinstance(kind, str):
        raise Malformed(f"event {number} is not a CDEvent (no context.type and subject)")
    if not RELISTING_TYPES.match(kind):
        return None
    purl = subject.get("id")
    if not isinstance(purl, str):
        raise Malformed(f"event {number}: the subject has no id")
    return _repository_of(purl, registry_url, number)


def _repository_of(purl: str, registry_url: str, number: int) -> str | None:
    """REPOSITORY of `pkg:oci/NAME@DIGEST?repository_url=HOST/REPOSITORY` when HOST is the registry's."""
    if not purl.lower().startswith("pkg:oci/"):
        return None
    qualifiers = dict(parse_qsl(purl.split("#", 1)[0].partition("?")[2]))
    location = unquote(qualifiers.get("repository_url", ""))
    location = location.split("://", 1)[1] if "://" in location else location
    purl_host, _, path = location.partition("/")
    if not same_host(purl_host, registry_url):
        return None
    return valid_repository(path.strip("/"), f"event {number}'s purl")


def setup(hook: Webhook) -> str:
    """How a CI system (or another watcher) sends its CDEvents here."""
    return "\n".join(
        [
            f"POST each CloudEvent to {hook.url}",
            "  Content-Type: application/cloudevents+json (structured mode: the CDEvent is the CloudEvent's data),",
            "                application/cloudevents-batch+json (an array of them), or application/json (binary",
            "                mode: the body is the CDEvent; the ce-* headers are not read)",
            "  X-Hub-Signature-256: sha256=HEX, the HMAC-SHA256 of the exact body bytes keyed with the secret:",
            f"  secret: {hook.secret}",
            "Re-listed: dev.cdevents.artifact.published / .packaged / .deleted events whose subject.id is",
            f"  pkg:oci/NAME@DIGEST?repository_url={_host_of(hook)}/REPOSITORY (this registry's host).",
            "For example:",
            f"  SIG=$(printf %s \"$BODY\" | openssl dgst -sha256 -hmac '{hook.secret}' | sed 's/^.*= //')",
            "  curl -H 'Content-Type: application/cloudevents+json' -H \"X-Hub-Signature-256: sha256=$SIG\" \\",
            f'    --data-binary "$BODY" {hook.url}',
        ]
    )


def _host_of(hook: Webhook) -> str:
    return urlsplit(hook.registry_url).netloc or "HOST"


FORMAT = HookFormat("cloudevents", Auth.HMAC, repositories, setup)
