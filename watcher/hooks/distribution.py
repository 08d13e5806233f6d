"""CNCF Distribution's notifications (`docker-registry`, and registries built on it): an envelope of
events, sent with the `Authorization` header configured in the registry's `notifications.endpoints`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from watcher.hooks.format import Auth, HookFormat, Malformed, Notification
from watcher.hooks.payload import json_object, media_type, member
from watcher.hooks.payload import repository as valid_repository
from watcher.registry.reference import is_tag, shown

#: the media types of Distribution's notification envelope (v2: Distribution 3), and plain JSON
DISTRIBUTION_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.events.v1+json",
        "application/vnd.docker.distribution.events.v2+json",
        "application/json",
    }
)
#: the media types of manifests (images, indexes, artifacts): events about anything else are about blobs
MANIFEST_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
    }
)
RELISTING_ACTIONS = ("push", "delete")
WHAT = "a Distribution registry"

if TYPE_CHECKING:
    from watcher.hooks.format import Webhook


def repositories(notification: Notification) -> list[str]:
    """The repositories a Distribution notification envelope says changed, each once, in order: those of
    manifest `push` and `delete` events with a tag or digest. (A delete names only a digest, and Distribution
    sends blob deletes the same way, without a media type: those re-list their repository too.)"""
    wanted: dict[str, None] = {}
    for number, event in enumerate(_events(notification)):
        repository = _relisted(event, number)
        if repository is not None:
            wanted[repository] = None
    return list(wanted)


def pushed(notification: Notification) -> dict[str, list[str]]:
    """The tags of manifest pushes, by repository. Distribution sends a push's notification before it links
    the tag (`manifests.Put` fires the event, then tags it), so a listing made at once may not show it yet."""
    tags: dict[str, list[str]] = {}
    for number, event in enumerate(_events(notification)):
        repository = _relisted(event, number)
        tag = event["target"].get("tag")
        if repository is not None and event["action"] == "push" and is_tag(tag):
            tags.setdefault(repository, []).append(tag)
    return tags


def _events(notification: Notification) -> list[Any]:
    kind = media_type(notification)
    if kind not in DISTRIBUTION_TYPES:
        raise Malformed(f"the content type {shown(kind)} is not a Distribution notification")
    events: list[Any] = member(json_object(notification, WHAT), "events", list, "")
    return events


def _relisted(event: Any, number: int) -> str | None:
    """The event's repository when it can change a tag; None when it cannot (a pull, a blob push)."""
    target = event.get("target") if isinstance(event, dict) else None
    action = event.get("action") if isinstance(event, dict) else None
    if not isinstance(target, dict) or not isinstance(action, str):
        raise Malformed(f"event {number} has no action and target")
    repository = valid_repository(target.get("repository"), f"event {number}")
    if action not in RELISTING_ACTIONS or not (target.get("tag") or target.get("digest")):
        return None
    kind = target.get("mediaType") or ""
    if kind in MANIFEST_TYPES or (action == "delete" and not kind):
        return repository
    return None


def setup(hook: Webhook) -> str:
    """The `notifications` section of a Distribution registry's config.yml (JSON strings are YAML). It
    ignores pulls, or every HEAD of every listing would come back as a notification, queued ahead of the
    deletes behind it; Distribution 2.8 applies `ignore.actions` only when `ignore.mediatypes` is set too,
    so blobs' events (which never relist) are ignored as well."""
    return "\n".join(
        [
            "notifications:",
            "  endpoints:",
            "    - name: watcher",
            f"      url: {json.dumps(hook.url)}",
            "      headers:",
            f"        Authorization: [{json.dumps('Bearer ' + hook.secret)}]",
            "      timeout: 5s",
            "      threshold: 3",
            "      backoff: 5s",
            "      ignore:",
            "        mediatypes: [application/octet-stream]",
            "        actions: [pull]",
        ]
    )


FORMAT = HookFormat("distribution", Auth.HEADER, repositories, setup, pushed=pushed)
